//! What a worker does with one message: load it, mark it `processing`, get a permit, call the
//! provider, classify the outcome, store the final state. Acknowledging the delivery is the
//! caller's job and happens only after the final state is stored.
//!
//! Idempotent by id: a message already `success` or `failed` is skipped, and the final write
//! only lands on a message that is not final yet.

use ractor::ActorRef;
use rand::Rng;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Deps;
use super::provider_key::{Permit, PermitDenied};
use super::workspace::{KeyOutcome, WorkspaceMsg};
use crate::domain::{Message, MessageResult, MessageStatus, ResponseFormat};
use crate::providers::{Completion as ProviderCompletion, CompletionRequest, ProviderError};
use crate::store::Completion;

/// What became of a delivery.
pub(crate) enum Processed {
    /// Final state stored (or the message is gone): acknowledge.
    Done,
    /// Already final, or deleted: acknowledge without counting.
    Skipped,
    /// A backend failed: give the delivery back and retry later.
    Retry,
    /// The engine is stopping: give the delivery back.
    GivenBack,
}

/// Processes one message id.
pub(crate) async fn process(
    deps: &Deps,
    workspace: &ActorRef<WorkspaceMsg>,
    id: Uuid,
) -> Processed {
    // Load and mark `processing` in one (group-committed) statement; a final or deleted
    // message is not returned.
    let msg = match deps.claims.write(id).await {
        Ok(Some(m)) => m,
        Ok(None) => return Processed::Skipped,
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, "cannot claim message");
            return Processed::Retry;
        }
    };
    let done = match call_until_final(deps, workspace, &msg).await {
        Ok(done) => done,
        Err(back) => return back,
    };
    match deps.finals.write((id, done)).await {
        Ok(_) => {
            let _ = deps.completions.send(id);
            Processed::Done
        }
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, "cannot store message result");
            Processed::Retry
        }
    }
}

/// The prompt part of a request's token estimate (`MessageRequest::estimated_prompt_tokens`: the
/// bytes sent / 4, rounded up). The permit is asked for before a key is chosen, so the
/// completion part (the key's `max_tokens`) is added by the key that grants it
/// (`provider_key::reservation`).
fn estimate_tokens(msg: &Message) -> u64 {
    msg.request.estimated_prompt_tokens()
}

/// What a call cost its key's token window, to reconcile the grant's reservation with:
/// - a success: the provider's reported `total_tokens` (`None` when it reported no usage: the
///   reservation stands);
/// - an error answer (429, 401/403, other 4xx, 5xx) or a connection failure: 0, the provider
///   generated nothing, so the whole reservation is given back;
/// - a timeout: `None`, the provider may have done the work; the reservation stands and ages out
///   with the window.
fn tokens_used(result: &Result<ProviderCompletion, ProviderError>, timed_out: bool) -> Option<u64> {
    match result {
        Ok(c) => c.usage.map(|u| u.total_tokens),
        Err(_) if timed_out => None,
        Err(_) => Some(0),
    }
}

/// Asks the workspace for a permit; `None` when the engine is stopping.
async fn acquire(
    deps: &Deps,
    workspace: &ActorRef<WorkspaceMsg>,
    msg: &Message,
) -> Option<Result<Permit, PermitDenied>> {
    let mut retry_delay = Duration::from_millis(20);
    loop {
        let (tx, rx) = oneshot::channel();
        let sent = workspace.cast(WorkspaceMsg::Acquire {
            model: msg.request.model.clone(),
            prompt_tokens: estimate_tokens(msg),
            reply: tx,
        });
        if sent.is_err() {
            // The workspace actor is gone (deleted or stopping).
            return None;
        }
        tokio::select! {
            biased;
            _ = deps.shutdown.cancelled() => return None,
            r = rx => match r {
                Ok(r) => return Some(r),
                // The key actor holding our request restarted: ask again.
                Err(_) => {
                    tokio::time::sleep(retry_delay).await;
                    retry_delay = (retry_delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Calls the provider until the message reaches a final state; `Err` when the delivery must go
/// back to the queue (engine stopping, grant not recordable).
async fn call_until_final(
    deps: &Deps,
    workspace: &ActorRef<WorkspaceMsg>,
    msg: &Message,
) -> Result<Completion, Processed> {
    let mut attempts = msg.attempts;
    let mut key_id = msg.key_id;
    let mut last_error: Option<String> = None;
    let failed = |error: String, attempts, key_id, result| Completion {
        status: MessageStatus::Failed,
        result,
        error: Some(error),
        attempts,
        key_id,
        completed_at: crate::engine::now(),
    };
    loop {
        if attempts >= deps.retry.max_attempts {
            let reason = last_error.unwrap_or_else(|| "too many attempts".into());
            return Ok(failed(
                format!("gave up after {attempts} attempts: {reason}"),
                attempts,
                key_id,
                None,
            ));
        }
        let permit = match acquire(deps, workspace, msg)
            .await
            .ok_or(Processed::GivenBack)?
        {
            Ok(p) => p,
            Err(PermitDenied(reason)) => {
                let reason = match last_error {
                    Some(last) => format!("{reason} (last provider error: {last})"),
                    None => reason,
                };
                return Ok(failed(reason, attempts, key_id, None));
            }
        };
        let key = permit.key.clone();
        key_id = Some(key.id);
        // The grant is stored before the request leaves, so a restarted engine still counts it.
        if let Err(e) = deps.grants.write((key.id, crate::engine::now())).await {
            tracing::error!(key_id = %key.id, error = %e, "cannot record the grant; not sending");
            // Nothing is sent: the reservation goes back.
            permit.used(0);
            return Err(Processed::Retry);
        }
        let req = CompletionRequest {
            model: msg
                .request
                .model
                .clone()
                .unwrap_or_else(|| key.config.model.clone()),
            system: msg.request.system_prompt.clone(),
            user: msg.request.user_text(),
            json: msg.request.response_format == ResponseFormat::Json,
            temperature: key.config.temperature,
            max_tokens: key.config.max_tokens,
        };
        let provider = deps.providers.get(key.provider);
        // The window counts from when the request really leaves, not from the grant.
        permit.sent(tokio::time::Instant::now());
        let call = tokio::time::timeout(key.config.timeout(), provider.complete(&key, &req)).await;
        let timed_out = call.is_err();
        let result = call
            .unwrap_or_else(|_| Err(ProviderError::Transient("provider call timed out".into())));
        // Reconciled before any outcome is reported or the next permit asked for.
        if let Some(tokens) = tokens_used(&result, timed_out) {
            permit.used(tokens);
        }
        match result {
            Ok(c) => {
                attempts += 1;
                if let Some(d) = c.pause_for {
                    // Reported before this worker asks for its next permit: the workspace's
                    // mailbox is FIFO, so that request already sees the key paused.
                    let _ = workspace.cast(WorkspaceMsg::Outcome {
                        key_id: key.id,
                        outcome: KeyOutcome::Exhausted(d),
                    });
                }
                let mut result = MessageResult {
                    json: None,
                    text: c.text,
                    model: c.model,
                    usage: c.usage,
                };
                if req.json {
                    match parse_json_answer(&result.text) {
                        Ok(v) => result.json = Some(v),
                        Err(e) => {
                            return Ok(failed(
                                format!("the provider's answer is not valid JSON: {e}"),
                                attempts,
                                key_id,
                                Some(result),
                            ));
                        }
                    }
                }
                return Ok(Completion {
                    status: MessageStatus::Success,
                    result: Some(result),
                    error: None,
                    attempts,
                    key_id,
                    completed_at: crate::engine::now(),
                });
            }
            Err(ProviderError::RateLimited {
                retry_after,
                message,
            }) => {
                tracing::info!(message_id = %msg.id, key_id = %key.id, ?retry_after, "provider 429; key cools down, message retried");
                last_error = Some(message);
                let _ = workspace.cast(WorkspaceMsg::Outcome {
                    key_id: key.id,
                    outcome: KeyOutcome::RateLimited(retry_after),
                });
            }
            Err(ProviderError::Unauthorized(message)) => {
                attempts += 1;
                last_error = Some(message);
                let _ = workspace.cast(WorkspaceMsg::Outcome {
                    key_id: key.id,
                    outcome: KeyOutcome::Unauthorized,
                });
            }
            Err(ProviderError::Transient(message)) => {
                attempts += 1;
                tracing::warn!(message_id = %msg.id, key_id = %key.id, attempts, error = %message, "provider call failed; will retry");
                last_error = Some(message);
                if attempts < deps.retry.max_attempts {
                    let delay = backoff(&deps.retry, attempts);
                    tokio::select! {
                        _ = deps.shutdown.cancelled() => return Err(Processed::GivenBack),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            Err(ProviderError::Rejected(message)) => {
                attempts += 1;
                return Ok(failed(message, attempts, key_id, None));
            }
        }
    }
}

/// Parses a JSON answer, tolerating a Markdown code fence around it.
fn parse_json_answer(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t);
    serde_json::from_str(t)
}

/// Exponential backoff with full jitter: a random delay in [d/2, d], d = base * 2^(attempt-1).
fn backoff(policy: &super::RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(policy.backoff_max);
    let half = exp / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_may_be_fenced() {
        assert_eq!(parse_json_answer("{\"a\":1}").unwrap()["a"], 1);
        assert_eq!(
            parse_json_answer("```json\n{\"a\":2}\n```").unwrap()["a"],
            2
        );
        assert!(parse_json_answer("not json").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = super::super::RetryPolicy::default();
        for attempt in 1..20 {
            let d = backoff(&p, attempt);
            assert!(d <= p.backoff_max);
            let full = p
                .backoff_base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(p.backoff_max);
            assert!(d >= full / 2);
        }
    }
}
