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
//!
//! Token limits: a permit request carries the prompt part of its estimate (see
//! `processing::estimate_tokens`); the key adds its own completion allowance
//! ([`completion_allowance`]) and reserves the sum ([`reservation`]) when it grants. After the
//! call the worker reports what the provider used (`Reconcile`), which replaces the reservation
//! at once and may let waiting requests go. The same [`reservation`] rule drives the projection
//! the workspace routes on, so reserving and projecting agree. Token reservations are not
//! recorded in the store: after a restart the token window starts empty (the request window is
//! restored).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::{ProviderKey, ProviderKind};
use crate::limiter::{GrantId, Limiter, Limits};
use crate::providers::ANTHROPIC_DEFAULT_MAX_TOKENS;
use crate::store::Store;

/// Completion tokens a request reserves on a key that sets no `config.max_tokens` and whose
/// provider is sent no default (OpenAI and compatible servers, Azure, mock). The provider may
/// generate more; reconciliation then charges the difference, which delays later requests.
pub(crate) const DEFAULT_COMPLETION_ALLOWANCE: u64 = 256;

/// The completion part of a request's reservation on `key`: its `config.max_tokens`, else the
/// `max_tokens` its provider is sent by default (Anthropic: 1024), else
/// [`DEFAULT_COMPLETION_ALLOWANCE`].
pub(crate) fn completion_allowance(key: &ProviderKey) -> u64 {
    match (key.config.max_tokens, key.provider) {
        (Some(max), _) => u64::from(max),
        (None, ProviderKind::Anthropic) => u64::from(ANTHROPIC_DEFAULT_MAX_TOKENS),
        (None, _) => DEFAULT_COMPLETION_ALLOWANCE,
    }
}

/// The tokens a request whose prompt is estimated at `prompt_tokens` reserves on `key` (the
/// limiter clamps it to the key's token limit).
pub(crate) fn reservation(key: &ProviderKey, prompt_tokens: u64) -> u64 {
    prompt_tokens.saturating_add(completion_allowance(key))
}

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

    /// Tells the key how many tokens the call really used; its reservation is replaced at once.
    /// Only keys with a token limit are told (nothing else depends on it): on a key that gains
    /// a limit while the call is in flight, the reservation simply counts until it ages out.
    pub(crate) fn used(&self, tokens: u64) {
        if self.key.token_limit.is_some() {
            let _ = self.from.cast(KeyMsg::Reconcile(self.grant, tokens));
        }
    }
}

/// Why no permit can be given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PermitDenied(pub String);

/// One worker waiting for a permit.
#[derive(Debug)]
pub(crate) struct PermitRequest {
    /// Estimated tokens of the prompt; the key adds its completion allowance
    /// ([`reservation`]).
    pub prompt_tokens: u64,
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
    /// The call of a grant used this many tokens (the provider's `total_tokens`; 0 for a call
    /// that failed without using any): replaces the grant's reservation, then grants what the
    /// freed capacity allows.
    Reconcile(GrantId, u64),
    /// Hand back every waiting request (key deleted or found unhealthy).
    Drain(RpcReplyPort<Vec<PermitRequest>>),
}

pub(crate) struct ProviderKeyActor;

pub(crate) struct KeyState {
    key: Arc<ProviderKey>,
    guard: Duration,
    limiter: Limiter,
    waiting: VecDeque<PermitRequest>,
    /// Sum of the `prompt_tokens` of `waiting`.
    waiting_prompt_tokens: u64,
    /// `prompt_tokens` of the latest request queued (the guess for the next one).
    last_prompt_tokens: u64,
    timer: Option<(Instant, JoinHandle<()>)>,
}

/// The limiter's limits for a key: its period lengthened by `guard`, the margin that absorbs
/// the jitter between a request leaving and the provider receiving it.
pub(crate) fn limits_of(key: &ProviderKey, guard: Duration) -> Limits {
    Limits {
        rate_limit: key.rate_limit.requests,
        period: key.rate_limit.period.duration() + guard,
        token_limit: key.token_limit,
    }
}

/// What a key actor starts from.
pub(crate) struct KeyArgs {
    pub key: Arc<ProviderKey>,
    pub store: Arc<dyn Store>,
    pub guard: Duration,
    /// The key's recorded grants when the caller already loaded them (a workspace starting
    /// all its keys reads them once); `None`: the key reads its own.
    pub recorded: Option<Vec<DateTime<Utc>>>,
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
    /// When a request queued now would be granted. Each waiting request, and the new one, is
    /// projected at the same reservation: the one of the waiting requests' mean prompt estimate
    /// (rounded up), or of the latest request's when none waits. Exact when the requests are
    /// alike; it only steers routing, never what is granted.
    fn next_slot(&self, now: Instant) -> Instant {
        let typical = match u64::try_from(self.waiting.len()) {
            Ok(n) if n > 0 => self.waiting_prompt_tokens.div_ceil(n),
            _ => self.last_prompt_tokens,
        };
        self.limiter
            .projected(now, self.waiting.len(), reservation(&self.key, typical))
    }

    fn push_back(&mut self, req: PermitRequest) {
        self.waiting_prompt_tokens = self.waiting_prompt_tokens.saturating_add(req.prompt_tokens);
        self.last_prompt_tokens = req.prompt_tokens;
        self.waiting.push_back(req);
    }

    fn pop_front(&mut self) -> Option<PermitRequest> {
        let req = self.waiting.pop_front()?;
        self.waiting_prompt_tokens = self.waiting_prompt_tokens.saturating_sub(req.prompt_tokens);
        Some(req)
    }

    /// Grants every waiting request the window allows now; sets the timer for the next one.
    fn pump(&mut self, myself: &ActorRef<KeyMsg>) {
        let now = Instant::now();
        while let Some(front) = self.waiting.front() {
            if front.reply.is_closed() {
                self.pop_front();
                continue;
            }
            let tokens = reservation(&self.key, front.prompt_tokens);
            match self.limiter.try_acquire(now, tokens) {
                Ok(grant) => {
                    if let Some(req) = self.pop_front() {
                        let permit = Permit {
                            key: self.key.clone(),
                            grant,
                            from: myself.clone(),
                        };
                        if req.reply.send(Ok(permit)).is_err() {
                            tracing::debug!(key_id = %self.key.id, "worker left before its permit");
                            // Nothing will be sent on it: its tokens go back.
                            self.limiter.reconcile(grant, 0);
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
        self.waiting_prompt_tokens = 0;
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
        let KeyArgs {
            key,
            store,
            guard,
            recorded,
        } = args;
        let limits = limits_of(&key, guard);
        let mut limiter = Limiter::new(limits);
        let wall_now = Utc::now();
        let since = wall_now
            - chrono::Duration::from_std(limits.period).unwrap_or(chrono::Duration::days(7));
        let recorded = match recorded {
            Some(r) => r,
            None => store
                .recent_grants(&key.workspace_id, since)
                .await?
                .into_iter()
                .filter(|(k, _)| *k == key.id)
                .map(|(_, at)| at)
                .collect(),
        };
        let now = Instant::now();
        let past: Vec<Instant> = recorded
            .into_iter()
            .filter(|at| *at >= since)
            .map(|at| instant_of(at, now, wall_now))
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
            waiting_prompt_tokens: 0,
            last_prompt_tokens: 0,
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
                state.push_back(req);
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
            KeyMsg::Reconcile(grant, tokens) => {
                state.limiter.reconcile(grant, tokens);
                // Capacity may have been given back: waiting requests may go now.
                state.pump(&myself);
            }
            KeyMsg::Drain(reply) => {
                let _ = reply.send(state.drain());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApiKey, KeyConfig, NewProviderKey, RateLimit, RatePeriod, WorkspaceId};

    fn key(
        provider: ProviderKind,
        max_tokens: Option<u32>,
        token_limit: Option<u64>,
    ) -> ProviderKey {
        NewProviderKey {
            provider,
            api_key: ApiKey::parse("sk-test-1234567890abcd").unwrap(),
            rate_limit: RateLimit::new(5, RatePeriod::from_seconds(60).unwrap()).unwrap(),
            token_limit,
            config: KeyConfig {
                model: "m".into(),
                max_tokens,
                ..Default::default()
            },
        }
        .into_key(WorkspaceId::parse("ws").unwrap(), Utc::now())
    }

    #[test]
    fn a_request_reserves_its_prompt_estimate_plus_the_keys_completion_allowance() {
        let openai = key(ProviderKind::OpenAi, None, None);
        assert_eq!(completion_allowance(&openai), DEFAULT_COMPLETION_ALLOWANCE);
        let anthropic = key(ProviderKind::Anthropic, None, None);
        assert_eq!(
            completion_allowance(&anthropic),
            u64::from(ANTHROPIC_DEFAULT_MAX_TOKENS)
        );
        let capped = key(ProviderKind::Anthropic, Some(50), None);
        assert_eq!(completion_allowance(&capped), 50);
        assert_eq!(reservation(&capped, 12), 62);
        assert_eq!(reservation(&capped, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_key_s_limits_carry_its_token_limit_and_the_guard() {
        let guard = Duration::from_millis(5);
        let limits = limits_of(&key(ProviderKind::OpenAi, None, Some(900)), guard);
        assert_eq!(limits.rate_limit, 5);
        assert_eq!(limits.period, Duration::from_secs(60) + guard);
        assert_eq!(limits.token_limit, Some(900));
        assert_eq!(
            limits_of(&key(ProviderKind::OpenAi, None, None), guard).token_limit,
            None
        );
    }
}
