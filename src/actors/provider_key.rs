//! The provider-key actor: the only place that decides whether a request may be sent on its key.
//!
//! It owns the key's [`Limiter`] and a FIFO of waiting permit requests. A request is granted the
//! moment the limiter allows it; otherwise one timer is set for the instant the head of the queue
//! can go (never a poll loop). Its handlers are pure bookkeeping: it never awaits I/O, so its
//! mailbox answers in microseconds. Every reply that changes when the *next* request could be
//! granted carries that instant, so the workspace can route to the key that can send soonest.
//!
//! Its window is measured on *send* times: the worker reports when a granted request really
//! left (`Sent`), and the period carries a small guard for the transport's jitter. The one read
//! it makes is at start: the grants recorded in the last period, so a restart does not reopen a
//! full window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::ProviderKey;
use crate::limiter::{GrantId, Limiter, Limits};
use crate::store::Store;

/// Leave to send one request on a key.
#[derive(Debug, Clone)]
pub(crate) struct Permit {
    /// The key to use (secret included).
    pub key: Arc<ProviderKey>,
    /// The limiter's handle of this grant.
    pub grant: GrantId,
    /// The key actor that gave it.
    pub from: ActorRef<KeyMsg>,
}

impl Permit {
    /// Tells the key when the request really left, so its window counts from then.
    pub(crate) fn sent(&self, at: Instant) {
        let _ = self.from.cast(KeyMsg::Sent(self.grant, at));
    }
}

/// Why no permit can be given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PermitDenied(pub String);

/// One worker waiting for a permit.
#[derive(Debug)]
pub(crate) struct PermitRequest {
    /// Estimated tokens of the request.
    pub tokens: u64,
    /// The model asked for (`None`: any key, with its own model).
    pub model: Option<String>,
    /// Where the permit goes.
    pub reply: oneshot::Sender<Result<Permit, PermitDenied>>,
}

pub(crate) enum KeyMsg {
    /// Queue a request; replies with the instant a further request could be granted.
    Enqueue(PermitRequest, RpcReplyPort<Instant>),
    /// The timer fired: grant what the window allows.
    Tick,
    /// The provider answered 429, or said the key's limit is used up: pause until `until`, hand
    /// back every waiting request.
    Pause(Instant, RpcReplyPort<(Vec<PermitRequest>, Instant)>),
    /// The key was updated (limits, secret, config): apply at once.
    Update(Arc<ProviderKey>, RpcReplyPort<Instant>),
    /// The request of a grant actually left at this instant.
    Sent(GrantId, Instant),
    /// Hand back every waiting request (key deleted or found unhealthy).
    Drain(RpcReplyPort<Vec<PermitRequest>>),
}

pub(crate) struct ProviderKeyActor;

pub(crate) struct KeyState {
    key: Arc<ProviderKey>,
    guard: Duration,
    limiter: Limiter,
    waiting: VecDeque<PermitRequest>,
    timer: Option<(Instant, JoinHandle<()>)>,
}

/// The limiter's limits for a key: its period lengthened by `guard`, the margin that absorbs
/// the jitter between a request leaving and the provider receiving it.
pub(crate) fn limits_of(key: &ProviderKey, guard: Duration) -> Limits {
    Limits {
        rate_limit: key.rate_limit.requests,
        period: key.rate_limit.period.duration() + guard,
        token_limit: None,
    }
}

/// What a key actor starts from.
pub(crate) struct KeyArgs {
    pub key: Arc<ProviderKey>,
    pub store: Arc<dyn Store>,
    pub guard: Duration,
}

/// This process's clock reading for a wall-clock time in the past (clamped to what the monotonic
/// clock can represent: a grant older than the clock counts as recent, which only delays).
fn instant_of(at: DateTime<Utc>, now: Instant, wall_now: DateTime<Utc>) -> Instant {
    let mut age = (wall_now - at).to_std().unwrap_or(Duration::ZERO);
    loop {
        if let Some(i) = now.checked_sub(age) {
            return i;
        }
        age /= 2;
    }
}

impl KeyState {
    /// When a request queued now would be granted.
    fn next_slot(&self, now: Instant) -> Instant {
        self.limiter.projected(now, self.waiting.len(), 0)
    }

    /// Grants every waiting request the window allows now; sets the timer for the next one.
    fn pump(&mut self, myself: &ActorRef<KeyMsg>) {
        let now = Instant::now();
        while let Some(front) = self.waiting.front() {
            if front.reply.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            match self.limiter.try_acquire(now, front.tokens) {
                Ok(grant) => {
                    if let Some(req) = self.waiting.pop_front() {
                        let permit = Permit {
                            key: self.key.clone(),
                            grant,
                            from: myself.clone(),
                        };
                        if req.reply.send(Ok(permit)).is_err() {
                            tracing::debug!(key_id = %self.key.id, "worker left before its permit");
                        }
                    }
                }
                Err(at) => {
                    self.arm(myself, now, at);
                    return;
                }
            }
        }
        self.disarm();
    }

    fn arm(&mut self, myself: &ActorRef<KeyMsg>, now: Instant, at: Instant) {
        if let Some((when, handle)) = &self.timer
            && *when == at
            && !handle.is_finished()
        {
            return;
        }
        self.disarm();
        let me = myself.clone();
        let delay = at.saturating_duration_since(now);
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(KeyMsg::Tick);
        });
        self.timer = Some((at, handle));
    }

    fn disarm(&mut self) {
        if let Some((_, handle)) = self.timer.take() {
            handle.abort();
        }
    }

    fn drain(&mut self) -> Vec<PermitRequest> {
        self.disarm();
        self.waiting
            .drain(..)
            .filter(|r| !r.reply.is_closed())
            .collect()
    }
}

#[ractor::async_trait]
impl Actor for ProviderKeyActor {
    type Msg = KeyMsg;
    type State = KeyState;
    type Arguments = KeyArgs;

    /// Starts from the grants the store recorded within the last period (a restart must not
    /// start the key's window empty). This read happens once, at start.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let KeyArgs { key, store, guard } = args;
        let limits = limits_of(&key, guard);
        let mut limiter = Limiter::new(limits);
        let wall_now = Utc::now();
        let since = wall_now
            - chrono::Duration::from_std(limits.period).unwrap_or(chrono::Duration::days(7));
        let now = Instant::now();
        let past: Vec<Instant> = store
            .recent_grants(&key.workspace_id, since)
            .await?
            .into_iter()
            .filter(|(k, _)| *k == key.id)
            .map(|(_, at)| instant_of(at, now, wall_now))
            .collect();
        if !past.is_empty() {
            tracing::info!(key_id = %key.id, restored = past.len(), "key window restored from recorded grants");
        }
        limiter.restore(past);
        Ok(KeyState {
            limiter,
            key,
            guard,
            waiting: VecDeque::new(),
            timer: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.disarm();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KeyMsg::Enqueue(req, reply) => {
                state.waiting.push_back(req);
                state.pump(&myself);
                let _ = reply.send(state.next_slot(Instant::now()));
            }
            KeyMsg::Tick => {
                state.timer = None;
                state.pump(&myself);
            }
            KeyMsg::Pause(until, reply) => {
                state.limiter.pause_until(until);
                tracing::info!(key_id = %state.key.id, pause_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64, "key paused by the provider's rate limit");
                let handed_back = state.drain();
                let _ = reply.send((handed_back, state.next_slot(Instant::now())));
            }
            KeyMsg::Update(key, reply) => {
                state.limiter.set_limits(limits_of(&key, state.guard));
                state.limiter.clear_pause();
                state.key = key;
                state.pump(&myself);
                let _ = reply.send(state.next_slot(Instant::now()));
            }
            KeyMsg::Sent(grant, at) => {
                state.limiter.mark_sent(grant, at);
            }
            KeyMsg::Drain(reply) => {
                let _ = reply.send(state.drain());
            }
        }
        Ok(())
    }
}
