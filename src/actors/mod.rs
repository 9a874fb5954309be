//! The actor tree: supervisor -> one workspace actor per workspace -> one provider-key actor per
//! key and N consumer actors (the workers).
//!
//! ```text
//! Supervisor ──┬── Workspace "a" ──┬── ProviderKey k1   (limiter; never awaits I/O)
//!              │                   ├── ProviderKey k2
//!              │                   ├── Consumer w1      (queue -> permit -> provider -> store -> ack)
//!              │                   └── Consumer w2
//!              └── Workspace "b" ── ...
//! ```
//!
//! Who owns what:
//! - the supervisor owns workspace actors and keeps the engine's `DashMap` of them current
//!   (never the process-global ractor registry, so two engines can share a process);
//! - a workspace actor routes permit requests to the key that can send soonest, applies key
//!   outcomes (429 cool-down, 401 unhealthy) and scales its consumers; it answers in microseconds
//!   and never awaits network I/O (the store write for key health is spawned);
//! - a provider-key actor is the only place that decides whether a request may be sent on its key;
//!   it holds a queue of waiting permit requests and grants them on a timer, never by polling;
//! - consumers are the only actors that wait on providers, the queue and the database.
//!
//! Every supervising actor overrides `handle_supervisor_evt`: a stopped child never stops its
//! parent; a failed child is restarted and the failure logged.

mod consumer;
mod processing;
mod provider_key;
mod supervisor;
mod workspace;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) use supervisor::{Supervisor, SupervisorMsg};
pub(crate) use workspace::WorkspaceMsg;

use crate::domain::{Message, WorkspaceId};
use crate::providers::Providers;
use crate::queue::Queue;
use crate::store::{BatchWriter, Completion, Store};
use chrono::{DateTime, Utc};

/// How workers treat provider failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Provider calls per message before it fails (429s are not counted).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_max: Duration,
    /// Cool-down of a key after a 429 without `Retry-After`.
    pub default_cooldown: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            default_cooldown: Duration::from_secs(1),
        }
    }
}

/// What every actor of one engine shares.
pub(crate) struct Deps {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub providers: Providers,
    pub retry: RetryPolicy,
    /// Workspace actors by id: the engine's own registry.
    pub workspaces: DashMap<WorkspaceId, ActorRef<WorkspaceMsg>>,
    /// Every message id that reached a final state is announced here.
    pub completions: tokio::sync::broadcast::Sender<Uuid>,
    /// Cancelled when the engine shuts down: workers stop waiting for permits.
    pub shutdown: CancellationToken,
    /// Added to every key's period: absorbs the jitter between sending and the provider's clock.
    pub limit_guard: Duration,
    /// Group commit of grants (recorded before each request leaves).
    pub grants: BatchWriter<(Uuid, DateTime<Utc>)>,
    /// Group commit of final states.
    pub finals: BatchWriter<(Uuid, Completion)>,
    /// Group commit of claims (load + mark `processing`); `None`: final or gone.
    pub claims: BatchWriter<Uuid, Option<Message>>,
    /// Group commit of published messages.
    pub inserts: BatchWriter<Message, crate::store::Inserted>,
}
