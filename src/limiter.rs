//! Pure sliding-window rate limiting for one LLM provider key.
//!
//! This module holds the whole decision logic of a provider key: which request may be sent when,
//! given a request limit per period, an optional token limit per period, a cool-down (pause)
//! imposed by the provider, and a prediction of where queued requests will land ("virtual
//! scheduling"), which is used to route a request to the key that can send it soonest.
//!
//! It exists as a separate, *pure* piece of code so that it can be property-tested exhaustively:
//! time is always passed in as a [`tokio::time::Instant`], nothing sleeps, there is no I/O, no
//! async and no shared state. The provider-key actor is its only user; the actor owns one
//! [`Limiter`] per key, asks it for the earliest instant a request may go out, sleeps until then
//! itself and reports the tokens the provider actually used afterwards.
//!
//! # Model
//!
//! Every granted request is recorded in a log as `(instant, reserved tokens)`. A log entry made at
//! instant `g` *counts* for every instant `t` with `g <= t < g + period`, i.e. the window "ending
//! at `t`" is `(t - period, t]`. An entry stops counting at exactly `g + period`, so when the entry
//! at `g` is the one filling the window, a new request can be granted at `g + period` (not a
//! nanosecond later). The same convention is used for the request window and the token window.
//!
//! A grant at `t` is allowed when, counting the new request itself,
//!
//! * the window ending at `t` holds at most `rate_limit` grants,
//! * the reserved tokens in that window (including the new estimate) are at most `token_limit`
//!   (when one is set), and
//! * `t` is not before the end of a pause.
//!
//! Because grants are only ever recorded at the current instant (never in the past), checking the
//! window that ends at the new grant is enough for the global guarantee: in *any* half-open
//! interval `[t, t + period)` at most `rate_limit` requests are granted (a true sliding log, no
//! 2x burst at a bucket edge), and — as far as the estimates allow — at most `token_limit` tokens
//! are reserved. For sorted grant times this means `g[i + rate_limit] - g[i] >= period`.
//!
//! # Edge cases (documented behaviour)
//!
//! * `rate_limit == 0` is treated as `1`, `period == 0` as one nanosecond (see
//!   [`Limits::normalized`]); the limiter never panics on any input.
//! * A request whose token estimate alone exceeds `token_limit` is **clamped** to `token_limit`:
//!   it reserves the whole token window and can still be sent once the window is empty (otherwise
//!   it could never be sent at all).
//! * [`Limiter::reconcile`] may raise an entry above its estimate (the provider used more tokens
//!   than estimated). The window may then hold more than `token_limit` tokens; this is accepted and
//!   simply delays later requests until enough tokens age out.
//! * The limiter's clock never goes backwards: an instant earlier than the latest instant it has
//!   been given in [`Limiter::try_acquire`] or [`Limiter::prune`] is treated as that latest
//!   instant. (Tokio's clock is monotonic, so this is only a safety net.)
//! * Instants that would overflow the platform's `Instant` saturate at the latest representable
//!   instant.
//! * Entries are pruned once they are older than the *current* period. If the period is later
//!   raised with [`Limiter::set_limits`], grants that were already pruned are forgotten.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Limits of one key: at most `rate_limit` requests and (optionally) at most `token_limit`
/// reserved tokens in any sliding window of length `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of requests per sliding window (`>= 1`; `0` is treated as `1`).
    pub rate_limit: u32,
    /// Length of the sliding window (`> 0`; zero is treated as one nanosecond).
    pub period: Duration,
    /// Maximum number of tokens per sliding window, if the provider limits tokens.
    pub token_limit: Option<u64>,
}

impl Limits {
    /// Creates limits; see the field docs for the meaning of each value.
    pub fn new(rate_limit: u32, period: Duration, token_limit: Option<u64>) -> Self {
        Self {
            rate_limit,
            period,
            token_limit,
        }
    }

    /// The limits as the limiter applies them: `rate_limit` at least 1, `period` at least one
    /// nanosecond, `token_limit` unchanged.
    pub fn normalized(self) -> Self {
        Self {
            rate_limit: self.rate_limit.max(1),
            period: if self.period.is_zero() {
                Duration::from_nanos(1)
            } else {
                self.period
            },
            token_limit: self.token_limit,
        }
    }
}

/// Handle for one granted reservation, used to reconcile its tokens afterwards with
/// [`Limiter::reconcile`]. Only meaningful for the limiter that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantId(u64);

/// One granted request in the log.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Instant of the grant.
    at: Instant,
    /// Reserved (or, after reconciliation, reported) tokens.
    tokens: u64,
    /// Sequential id (the log is sorted by `at`; `mark_sent` may reorder ids).
    id: u64,
}

/// Sliding-window limiter of one provider key. See the [module docs](self) for the model.
#[derive(Debug, Clone)]
pub struct Limiter {
    /// Normalized limits in effect.
    limits: Limits,
    /// Grants, sorted by `at` (and by `id`).
    log: VecDeque<Entry>,
    /// Sum of `tokens` over `log` (u128: cannot overflow).
    tokens: u128,
    /// Id of the next grant.
    next_id: u64,
    /// No grant before this instant.
    pause: Option<Instant>,
    /// Latest instant seen by a mutating call; the limiter's clock never goes below it.
    horizon: Option<Instant>,
}

impl Limiter {
    /// Creates a limiter with an empty log and no pause. The limits are normalized
    /// (see [`Limits::normalized`]).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: limits.normalized(),
            log: VecDeque::new(),
            tokens: 0,
            next_id: 0,
            pause: None,
            horizon: None,
        }
    }

    /// The limits in effect (normalized).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Replaces the limits at once (a live key's limit change). Past grants stay in the log and
    /// count against the new limits: lowering a limit below the current window usage blocks new
    /// grants until enough of them age out; raising it frees capacity immediately. Entries that
    /// were already pruned under a shorter period are not resurrected by a longer one.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits.normalized();
    }

    /// Earliest instant `>= now` at which a request estimated at `tokens` tokens could be granted,
    /// given the log, the token window and any pause. Pure query: `earliest(now, tokens) == now`
    /// exactly when `try_acquire(now, tokens)` would succeed.
    ///
    /// Cost: O(1) for the request window; the token window needs a walk over the oldest entries
    /// only when it is too full for the request (after pruning, only over the entries that must
    /// expire first).
    pub fn earliest(&self, now: Instant, tokens: u64) -> Instant {
        self.earliest_after(now, tokens, 0, self.tokens, &VecDeque::new(), 0)
    }

    /// Grants the request now if possible: records the grant at `now` (reserving the clamped
    /// token estimate) and returns its id. Otherwise returns `Err(earliest)`, the instant
    /// (`> now`) at which it could be granted if nothing else changes. Prunes the log first.
    pub fn try_acquire(&mut self, now: Instant, tokens: u64) -> Result<GrantId, Instant> {
        self.prune(now);
        let at = self.earliest(now, tokens);
        if at > now {
            return Err(at);
        }
        Ok(self.record(now, tokens))
    }

    /// Seeds the log with requests granted before this limiter existed (before a restart), so
    /// they keep counting against the window until they age out. Each counts one request and no
    /// tokens (token reservations are not persisted). Call on a fresh limiter: instants earlier
    /// than the latest already recorded are ignored, to keep the log sorted.
    pub fn restore(&mut self, mut past: Vec<Instant>) {
        past.sort_unstable();
        for at in past {
            if self.log.back().is_none_or(|e| e.at <= at) {
                self.record(at, 0);
            }
        }
    }

    /// Where would the `(queued + 1)`-th request land if `queued` requests of `tokens_each` tokens
    /// are already waiting ahead of it and each is granted at its own earliest instant, in order?
    /// `queued == 0` is the same as [`earliest(now, tokens_each)`](Self::earliest). Pure; the
    /// queued requests are assumed to keep their estimates (no reconciliation in between). Used to
    /// route a request to the key that can send it soonest.
    ///
    /// Cost: O(min(queued, 2 * batch)) steps (plus a walk over the expiring entries), where
    /// `batch` is the number of such requests that fit in one window; the log is not copied.
    /// Beyond two batches the schedule repeats every `period` and is extrapolated.
    pub fn projected(&self, now: Instant, queued: usize, tokens_each: u64) -> Instant {
        if queued == 0 {
            return self.earliest(now, tokens_each);
        }
        let target = queued.saturating_add(1);
        let batch = self.batch_size(tokens_each);
        if target <= batch.saturating_mul(2) {
            return self.simulate(now, target, tokens_each);
        }
        // Once `batch` queued requests are in the log, the one `batch` places earlier is the only
        // entry keeping a request out, so g[j + batch] = g[j] + period for every j > batch.
        let beyond = target - batch - 1;
        let periods = beyond / batch;
        let offset = beyond % batch;
        let anchor = self.simulate(now, batch + 1 + offset, tokens_each);
        add(anchor, mul(self.limits.period, periods))
    }

    /// After the call: replaces the reserved estimate of `grant` by the provider-reported
    /// `actual_tokens`. An unused reservation is given back at once; an underestimate is charged
    /// (the window may then exceed the token limit, which only delays later requests). Unknown or
    /// already pruned ids are ignored.
    pub fn reconcile(&mut self, grant: GrantId, actual_tokens: u64) {
        if let Some(index) = self.index_of(grant)
            && let Some(entry) = self.log.get_mut(index)
        {
            self.tokens = self
                .tokens
                .saturating_sub(u128::from(entry.tokens))
                .saturating_add(u128::from(actual_tokens));
            entry.tokens = actual_tokens;
        }
    }

    /// The request of `grant` actually went out at `at` (a grant is recorded when it is given;
    /// the worker reports when it really sent the request). The entry moves to `at` when that is
    /// later, so the window is measured on send times: a request that left late keeps counting
    /// until `at + period`, never just `grant + period`. Unknown or pruned ids are ignored.
    pub fn mark_sent(&mut self, grant: GrantId, at: Instant) {
        let Some(mut i) = self.index_of(grant) else {
            return;
        };
        if self.log[i].at >= at {
            return;
        }
        self.log[i].at = at;
        // Keep the log sorted by instant: move the entry past the ones granted before `at`.
        while i + 1 < self.log.len() && self.log[i + 1].at < at {
            self.log.swap(i, i + 1);
            i += 1;
        }
        self.horizon = Some(self.horizon.map_or(at, |h| h.max(at)));
    }

    /// Position of a grant in the log (searched from the newest end: callers ask about recent
    /// grants).
    fn index_of(&self, grant: GrantId) -> Option<usize> {
        self.log.iter().rposition(|entry| entry.id == grant.0)
    }

    /// Cool-down (provider 429 / `Retry-After`): no grant before `until` (a grant at `until` is
    /// allowed). A later call with an earlier `until` does not shorten an existing pause.
    pub fn pause_until(&mut self, until: Instant) {
        self.pause = Some(self.pause.map_or(until, |current| current.max(until)));
    }

    /// Clears any pause (e.g. the key was updated by the operator).
    pub fn clear_pause(&mut self) {
        self.pause = None;
    }

    /// The end of the pause if the key is paused at `now` (i.e. the pause ends after `now`).
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.pause.filter(|until| *until > now)
    }

    /// Number of grants in the window ending at `now`, i.e. granted in `(now - period, now]`.
    /// Pruned entries are not counted.
    pub fn in_window(&self, now: Instant) -> usize {
        let (start, end) = self.window_bounds(now);
        end.saturating_sub(start)
    }

    /// Tokens (reserved or reconciled) of the grants in the window ending at `now`, i.e. granted
    /// in `(now - period, now]`, saturating at `u64::MAX`. Pruned entries are not counted.
    pub fn tokens_in_window(&self, now: Instant) -> u64 {
        let (start, end) = self.window_bounds(now);
        let sum: u128 = self
            .log
            .iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .map(|entry| u128::from(entry.tokens))
            .sum();
        u64::try_from(sum).unwrap_or(u64::MAX)
    }

    /// Drops log entries that can no longer affect any decision (granted at or before
    /// `now - period`) and a pause that has ended. Call freely; `try_acquire` does it too.
    pub fn prune(&mut self, now: Instant) {
        let now = self.effective_now(now);
        self.horizon = Some(now);
        while let Some(front) = self.log.front() {
            if add(front.at, self.limits.period) > now {
                break;
            }
            self.tokens = self.tokens.saturating_sub(u128::from(front.tokens));
            self.log.pop_front();
        }
        if self.pause.is_some_and(|until| until <= now) {
            self.pause = None;
        }
    }

    /// `now`, but never before the latest instant given to a mutating call.
    fn effective_now(&self, now: Instant) -> Instant {
        match self.horizon {
            Some(horizon) if horizon > now => horizon,
            _ => now,
        }
    }

    /// Records a grant at `at` (which must be `>= horizon`), reserving the clamped estimate.
    fn record(&mut self, at: Instant, tokens: u64) -> GrantId {
        let tokens = self.reserved(tokens);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.log.push_back(Entry { at, tokens, id });
        self.tokens = self.tokens.saturating_add(u128::from(tokens));
        self.horizon = Some(self.effective_now(at));
        GrantId(id)
    }

    /// Earliest instant `>= now` for a request of `tokens` tokens, given the log without its
    /// first `skip` entries (`log_tokens` is the token sum of the rest), followed by the
    /// `virtual_grants` of a projection, each reserving `virtual_tokens`. The plain query is
    /// `skip = 0`, no virtual grants.
    ///
    /// * Request window: with `len` entries, the new grant needs the `rate_limit`-th most recent
    ///   one (index `len - rate_limit`) to have stopped counting, at its instant + period.
    /// * Token window: if the window is too full, drop the oldest entries one by one; the first
    ///   one whose expiry leaves room gives the answer (its instant + period): before that
    ///   instant it and every later entry still count. Entries that already expired give
    ///   instants in the past, which `max(now, ..)` discards.
    fn earliest_after(
        &self,
        now: Instant,
        tokens: u64,
        skip: usize,
        log_tokens: u128,
        virtual_grants: &VecDeque<Instant>,
        virtual_tokens: u64,
    ) -> Instant {
        let period = self.limits.period;
        let mut at = self.effective_now(now);
        if let Some(pause) = self.pause {
            at = at.max(pause);
        }

        let real_len = self.log.len().saturating_sub(skip);
        let len = real_len.saturating_add(virtual_grants.len());
        let rate_limit = usize::try_from(self.limits.rate_limit).unwrap_or(usize::MAX);
        if let Some(index) = len.checked_sub(rate_limit) {
            let oldest_counting = if index < real_len {
                self.log.get(skip + index).map(|entry| entry.at)
            } else {
                virtual_grants.get(index - real_len).copied()
            };
            if let Some(oldest) = oldest_counting {
                at = at.max(add(oldest, period));
            }
        }

        if let Some(token_limit) = self.limits.token_limit {
            let needed = u128::from(tokens.min(token_limit));
            let limit = u128::from(token_limit);
            let virtual_count = u128::try_from(virtual_grants.len()).unwrap_or(u128::MAX);
            let mut remaining =
                log_tokens.saturating_add(u128::from(virtual_tokens).saturating_mul(virtual_count));
            if remaining.saturating_add(needed) > limit {
                let entries = self
                    .log
                    .iter()
                    .skip(skip)
                    .map(|entry| (entry.at, entry.tokens))
                    .chain(virtual_grants.iter().map(|at| (*at, virtual_tokens)));
                // Always found, as `needed <= limit`; stay total regardless.
                let mut ready = None;
                for (granted, tokens) in entries {
                    remaining = remaining.saturating_sub(u128::from(tokens));
                    ready = Some(granted);
                    if remaining.saturating_add(needed) <= limit {
                        break;
                    }
                }
                if let Some(granted) = ready {
                    at = at.max(add(granted, period));
                }
            }
        }
        at
    }

    /// How many requests of `tokens_each` tokens fit in one window (at least 1).
    fn batch_size(&self, tokens_each: u64) -> usize {
        let by_rate = usize::try_from(self.limits.rate_limit).unwrap_or(usize::MAX);
        match self.limits.token_limit {
            Some(limit) => match tokens_each.min(limit) {
                0 => by_rate,
                reserved => usize::try_from(limit / reserved)
                    .unwrap_or(usize::MAX)
                    .clamp(1, by_rate),
            },
            None => by_rate,
        }
    }

    /// Instant of the `nth` (>= 1) of a sequence of requests granted greedily from `now`.
    /// Simulated without copying the log: expired real entries are skipped by index and the
    /// simulated grants kept in a small queue of their own (at most about one window's worth).
    fn simulate(&self, now: Instant, nth: usize, tokens_each: u64) -> Instant {
        let period = self.limits.period;
        let reserved = self.reserved(tokens_each);
        let mut skip = 0;
        let mut log_tokens = self.tokens;
        let mut virtual_grants = VecDeque::new();
        let mut at = self.effective_now(now);
        for _ in 1..nth {
            at = self.earliest_after(at, tokens_each, skip, log_tokens, &virtual_grants, reserved);
            while let Some(entry) = self.log.get(skip) {
                if add(entry.at, period) > at {
                    break;
                }
                log_tokens = log_tokens.saturating_sub(u128::from(entry.tokens));
                skip += 1;
            }
            while virtual_grants
                .front()
                .is_some_and(|granted| add(*granted, period) <= at)
            {
                virtual_grants.pop_front();
            }
            virtual_grants.push_back(at);
        }
        self.earliest_after(at, tokens_each, skip, log_tokens, &virtual_grants, reserved)
    }

    /// Tokens reserved for an estimate: clamped to the token limit, if any.
    fn reserved(&self, tokens: u64) -> u64 {
        match self.limits.token_limit {
            Some(limit) => tokens.min(limit),
            None => tokens,
        }
    }

    /// Log indices `[start, end)` of the entries granted in `(now - period, now]`.
    fn window_bounds(&self, now: Instant) -> (usize, usize) {
        let period = self.limits.period;
        let start = self
            .log
            .partition_point(|entry| add(entry.at, period) <= now);
        let end = self.log.partition_point(|entry| entry.at <= now);
        (start, end)
    }
}

/// `at + by`, saturating at the latest representable instant instead of panicking.
fn add(at: Instant, by: Duration) -> Instant {
    if let Some(sum) = at.checked_add(by) {
        return sum;
    }
    // Binary search for the largest representable offset: `low` fits, `high` does not.
    let mut low = Duration::ZERO;
    let mut high = by;
    while high - low > Duration::from_nanos(1) {
        let mid = low + (high - low) / 2;
        if at.checked_add(mid).is_some() {
            low = mid;
        } else {
            high = mid;
        }
    }
    at.checked_add(low).unwrap_or(at)
}

/// `period * times`, saturating at `Duration::MAX`.
fn mul(period: Duration, times: usize) -> Duration {
    let nanos = period
        .as_nanos()
        .saturating_mul(u128::try_from(times).unwrap_or(u128::MAX));
    let secs = nanos / 1_000_000_000;
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, subsec),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn limiter(rate_limit: u32, period: Duration, token_limit: Option<u64>) -> Limiter {
        Limiter::new(Limits::new(rate_limit, period, token_limit))
    }

    // ---------------------------------------------------------------- request window

    #[test]
    fn burst_of_rate_limit_then_refusal_with_exact_earliest() {
        let t0 = Instant::now();
        let mut lim = limiter(3, secs(10), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 0).is_ok());
        assert!(lim.try_acquire(t0 + secs(2), 0).is_ok());
        assert_eq!(lim.in_window(t0 + secs(2)), 3);
        // The 4th must wait until the first ages out at t0 + 10s.
        assert_eq!(lim.try_acquire(t0 + secs(2), 0), Err(t0 + secs(10)));
        assert_eq!(lim.earliest(t0 + secs(5), 0), t0 + secs(10));
        assert!(lim.try_acquire(t0 + secs(10), 0).is_ok());
        // Then the second one (t0 + 1s) is the one to wait for.
        assert_eq!(lim.try_acquire(t0 + secs(10), 0), Err(t0 + secs(11)));
    }

    #[test]
    fn grant_is_allowed_exactly_when_the_oldest_entry_ages_out() {
        let t0 = Instant::now();
        let mut lim = limiter(1, secs(10), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
        let just_before = t0 + secs(10) - Duration::from_nanos(1);
        assert_eq!(lim.try_acquire(just_before, 0), Err(t0 + secs(10)));
        assert_eq!(lim.in_window(just_before), 1);
        assert_eq!(lim.in_window(t0 + secs(10)), 0);
        assert!(lim.try_acquire(t0 + secs(10), 0).is_ok());
    }

    #[test]
    fn no_double_burst_at_a_window_edge() {
        let t0 = Instant::now();
        let period = secs(60);
        let mut lim = limiter(5, period, None);
        let edge = t0 + period - ms(1);
        for _ in 0..5 {
            assert!(lim.try_acquire(edge, 0).is_ok());
        }
        // A fixed-bucket limiter would allow 5 more right after the bucket boundary.
        let after_edge = t0 + period + ms(1);
        assert_eq!(lim.try_acquire(after_edge, 0), Err(edge + period));
        assert_eq!(lim.in_window(after_edge), 5);
        for _ in 0..5 {
            assert!(lim.try_acquire(edge + period, 0).is_ok());
        }
        assert_eq!(lim.try_acquire(edge + period, 0), Err(edge + period * 2));
    }

    #[test]
    fn set_limits_raising_takes_effect_at_once() {
        let t0 = Instant::now();
        let mut lim = limiter(2, secs(10), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
        assert!(lim.try_acquire(t0, 0).is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 0).is_err());
        lim.set_limits(Limits::new(4, secs(10), None));
        assert_eq!(lim.limits().rate_limit, 4);
        assert!(lim.try_acquire(t0 + secs(1), 0).is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 0).is_ok());
        assert_eq!(lim.try_acquire(t0 + secs(1), 0), Err(t0 + secs(10)));
    }

    #[test]
    fn set_limits_lowering_counts_past_grants_against_the_new_limit() {
        let t0 = Instant::now();
        let mut lim = limiter(5, secs(10), None);
        for i in 0..4 {
            assert!(lim.try_acquire(t0 + secs(i), 0).is_ok());
        }
        lim.set_limits(Limits::new(2, secs(10), None));
        // 4 grants in the window, limit 2: the 3rd most recent (t0 + 2s) must age out first.
        assert_eq!(lim.try_acquire(t0 + secs(4), 0), Err(t0 + secs(12)));
        assert!(lim.try_acquire(t0 + secs(12), 0).is_ok());
        assert_eq!(lim.try_acquire(t0 + secs(12), 0), Err(t0 + secs(13)));
    }

    #[test]
    fn degenerate_limits_are_normalized() {
        let t0 = Instant::now();
        let mut lim = limiter(0, Duration::ZERO, None);
        assert_eq!(lim.limits(), Limits::new(1, Duration::from_nanos(1), None));
        assert!(lim.try_acquire(t0, 0).is_ok());
        assert_eq!(lim.try_acquire(t0, 0), Err(t0 + Duration::from_nanos(1)));
        assert!(lim.try_acquire(t0 + Duration::from_nanos(1), 0).is_ok());
    }

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let t0 = Instant::now();
        let mut lim = limiter(1, Duration::MAX, Some(u64::MAX));
        assert!(lim.try_acquire(t0, u64::MAX).is_ok());
        lim.reconcile(GrantId(0), u64::MAX);
        let blocked = lim.try_acquire(t0 + secs(1), u64::MAX);
        assert!(matches!(blocked, Err(at) if at > t0 + secs(1_000_000)));
        let far = lim.projected(t0, usize::MAX, u64::MAX);
        assert!(far > t0 + secs(1_000_000));
        lim.prune(t0 + secs(3600));
        assert_eq!(lim.in_window(t0 + secs(3600)), 1);
        assert_eq!(lim.tokens_in_window(t0 + secs(3600)), u64::MAX);
    }

    #[test]
    fn time_going_backwards_is_treated_as_the_latest_instant_seen() {
        let t0 = Instant::now();
        let mut lim = limiter(10, secs(10), None);
        assert!(lim.try_acquire(t0 + secs(5), 0).is_ok());
        // An older instant cannot be granted (the log stays sorted); the answer is the latest one.
        assert_eq!(lim.earliest(t0, 0), t0 + secs(5));
        assert_eq!(lim.try_acquire(t0, 0), Err(t0 + secs(5)));
        assert!(lim.try_acquire(t0 + secs(5), 0).is_ok());
    }

    #[test]
    fn prune_drops_only_entries_that_aged_out() {
        let t0 = Instant::now();
        let mut lim = limiter(10, secs(10), Some(1000));
        assert!(lim.try_acquire(t0, 100).is_ok());
        assert!(lim.try_acquire(t0 + secs(5), 200).is_ok());
        lim.prune(t0 + secs(10));
        assert_eq!(lim.in_window(t0 + secs(10)), 1);
        assert_eq!(lim.tokens_in_window(t0 + secs(10)), 200);
        lim.prune(t0 + secs(15));
        assert_eq!(lim.in_window(t0 + secs(15)), 0);
        assert_eq!(lim.tokens_in_window(t0 + secs(15)), 0);
    }

    // ---------------------------------------------------------------- pause

    #[test]
    fn pause_until_blocks_grants_and_is_never_shortened() {
        let t0 = Instant::now();
        let mut lim = limiter(10, secs(10), None);
        lim.pause_until(t0 + secs(30));
        assert_eq!(lim.paused_until(t0), Some(t0 + secs(30)));
        assert_eq!(lim.try_acquire(t0, 0), Err(t0 + secs(30)));
        lim.pause_until(t0 + secs(20));
        assert_eq!(lim.paused_until(t0), Some(t0 + secs(30)));
        assert_eq!(lim.earliest(t0 + secs(25), 0), t0 + secs(30));
        lim.pause_until(t0 + secs(40));
        assert_eq!(lim.earliest(t0, 0), t0 + secs(40));
        assert!(lim.try_acquire(t0 + secs(40), 0).is_ok());
        assert_eq!(lim.paused_until(t0 + secs(40)), None);
    }

    #[test]
    fn clear_pause_lifts_the_pause_at_once() {
        let t0 = Instant::now();
        let mut lim = limiter(10, secs(10), None);
        lim.pause_until(t0 + secs(30));
        assert!(lim.try_acquire(t0, 0).is_err());
        lim.clear_pause();
        assert_eq!(lim.paused_until(t0), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
    }

    #[test]
    fn pause_combines_with_a_full_window() {
        let t0 = Instant::now();
        let mut lim = limiter(1, secs(10), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
        lim.pause_until(t0 + secs(5));
        assert_eq!(lim.earliest(t0 + secs(1), 0), t0 + secs(10));
        lim.pause_until(t0 + secs(15));
        assert_eq!(lim.earliest(t0 + secs(1), 0), t0 + secs(15));
    }

    // ---------------------------------------------------------------- virtual scheduling

    #[test]
    fn projected_places_queued_requests_in_later_batches() {
        let t0 = Instant::now();
        let lim = limiter(2, secs(10), None);
        // Slots: [0, 0], [10, 10], [20, 20], ...
        let expected = [0, 0, 10, 10, 20, 20, 30];
        for (queued, slot) in expected.iter().enumerate() {
            assert_eq!(
                lim.projected(t0, queued, 0),
                t0 + secs(*slot),
                "queued = {queued}"
            );
        }
        // 5 queued ahead: the 6th request lands in the 3rd batch.
        assert_eq!(lim.projected(t0, 5, 0), t0 + secs(20));
    }

    #[test]
    fn projected_accounts_for_the_log_and_pause() {
        let t0 = Instant::now();
        let mut lim = limiter(2, secs(10), None);
        assert!(lim.try_acquire(t0, 0).is_ok());
        assert!(lim.try_acquire(t0 + secs(4), 0).is_ok());
        let now = t0 + secs(5);
        assert_eq!(lim.projected(now, 0, 0), t0 + secs(10));
        assert_eq!(lim.projected(now, 1, 0), t0 + secs(14));
        assert_eq!(lim.projected(now, 2, 0), t0 + secs(20));
        assert_eq!(lim.projected(now, 3, 0), t0 + secs(24));
        lim.pause_until(t0 + secs(30));
        assert_eq!(lim.projected(now, 0, 0), t0 + secs(30));
        assert_eq!(lim.projected(now, 1, 0), t0 + secs(30));
        assert_eq!(lim.projected(now, 2, 0), t0 + secs(40));
        // Pure: nothing was recorded.
        assert_eq!(lim.in_window(now), 2);
    }

    #[test]
    fn projected_with_zero_queued_equals_earliest() {
        let t0 = Instant::now();
        let mut lim = limiter(3, secs(10), Some(100));
        assert!(lim.try_acquire(t0, 60).is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 30).is_ok());
        for tokens in [0, 10, 11, 50, 100, 500] {
            let now = t0 + secs(2);
            assert_eq!(lim.projected(now, 0, tokens), lim.earliest(now, tokens));
        }
    }

    #[test]
    fn projected_uses_the_token_window_as_batch_size() {
        let t0 = Instant::now();
        // 10 requests or 100 tokens per 10 s; 40 tokens each -> 2 per window.
        let lim = limiter(10, secs(10), Some(100));
        let expected = [0, 0, 10, 10, 20, 20, 30, 30];
        for (queued, slot) in expected.iter().enumerate() {
            assert_eq!(lim.projected(t0, queued, 40), t0 + secs(*slot));
        }
    }

    // ---------------------------------------------------------------- token window

    #[test]
    fn token_reservation_blocks_until_it_ages_out() {
        let t0 = Instant::now();
        let mut lim = limiter(100, secs(60), Some(1000));
        assert!(lim.try_acquire(t0, 600).is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 300).is_ok());
        assert_eq!(lim.tokens_in_window(t0 + secs(1)), 900);
        assert!(lim.try_acquire(t0 + secs(2), 100).is_ok());
        // Window full (1000): 200 more tokens need the 600 to age out.
        assert_eq!(lim.try_acquire(t0 + secs(2), 200), Err(t0 + secs(60)));
        assert_eq!(lim.try_acquire(t0 + secs(2), 1), Err(t0 + secs(60)));
        assert!(lim.try_acquire(t0 + secs(60), 200).is_ok());
        // 300 + 100 + 200 = 600 in the window; 500 more must wait for the 300 to age out.
        assert_eq!(lim.try_acquire(t0 + secs(60), 500), Err(t0 + secs(61)));
    }

    #[test]
    fn reconcile_gives_back_unused_capacity_at_once() {
        let t0 = Instant::now();
        let mut lim = limiter(100, secs(60), Some(1000));
        let grant = lim.try_acquire(t0, 800);
        assert!(grant.is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 500).is_err());
        if let Ok(id) = grant {
            lim.reconcile(id, 300);
        }
        assert_eq!(lim.tokens_in_window(t0 + secs(1)), 300);
        assert!(lim.try_acquire(t0 + secs(1), 500).is_ok());
    }

    #[test]
    fn reconcile_charges_an_underestimate_without_panicking() {
        let t0 = Instant::now();
        let mut lim = limiter(100, secs(60), Some(1000));
        let first = lim.try_acquire(t0, 100);
        assert!(first.is_ok());
        assert!(lim.try_acquire(t0 + secs(1), 100).is_ok());
        if let Ok(id) = first {
            lim.reconcile(id, 5000);
        }
        assert_eq!(lim.tokens_in_window(t0 + secs(1)), 5100);
        // Over the limit: wait until the big one ages out.
        assert_eq!(lim.try_acquire(t0 + secs(2), 1), Err(t0 + secs(60)));
        assert!(lim.try_acquire(t0 + secs(60), 900).is_ok());
    }

    #[test]
    fn reconcile_ignores_unknown_and_pruned_ids() {
        let t0 = Instant::now();
        let mut lim = limiter(100, secs(60), Some(1000));
        let first = lim.try_acquire(t0, 100);
        assert!(lim.try_acquire(t0 + secs(30), 100).is_ok());
        lim.reconcile(GrantId(12345), 999);
        assert_eq!(lim.tokens_in_window(t0 + secs(30)), 200);
        lim.prune(t0 + secs(61));
        if let Ok(id) = first {
            lim.reconcile(id, 999);
        }
        assert_eq!(lim.tokens_in_window(t0 + secs(61)), 100);
    }

    #[test]
    fn oversize_estimate_is_clamped_to_the_token_limit() {
        let t0 = Instant::now();
        let mut lim = limiter(100, secs(60), Some(1000));
        assert_eq!(lim.earliest(t0, 5000), t0);
        assert!(lim.try_acquire(t0, 5000).is_ok());
        assert_eq!(lim.tokens_in_window(t0), 1000);
        // It reserved the whole window.
        assert_eq!(lim.try_acquire(t0 + secs(1), 1), Err(t0 + secs(60)));
        // And a second oversize request waits for an empty window, not forever.
        assert_eq!(lim.earliest(t0 + secs(1), u64::MAX), t0 + secs(60));
        assert!(lim.try_acquire(t0 + secs(60), u64::MAX).is_ok());
    }

    // ---------------------------------------------------------------- properties

    /// Independent, naive model of the limiter: a full grant list, scanned on every question.
    #[derive(Debug, Default)]
    struct Model {
        /// (instant, tokens now charged, limits at grant time) of every grant, in order.
        grants: Vec<(Instant, u64, Limits)>,
        ids: Vec<GrantId>,
        pause: Option<Instant>,
    }

    impl Model {
        fn allowed(&self, limits: Limits, at: Instant, tokens: u64) -> bool {
            let limits = limits.normalized();
            if self.pause.is_some_and(|p| at < p) {
                return false;
            }
            let in_window: Vec<u64> = self
                .grants
                .iter()
                .filter(|(g, _, _)| *g <= at && *g + limits.period > at)
                .map(|(_, tok, _)| *tok)
                .collect();
            if in_window.len() >= limits.rate_limit as usize {
                return false;
            }
            match limits.token_limit {
                Some(limit) => {
                    let used: u128 = in_window.iter().map(|t| u128::from(*t)).sum();
                    used + u128::from(tokens.min(limit)) <= u128::from(limit)
                }
                None => true,
            }
        }

        /// Allowedness only changes at `now`, at the end of the pause and when an entry ages out.
        fn earliest(&self, limits: Limits, now: Instant, tokens: u64) -> Instant {
            let period = limits.normalized().period;
            let mut candidates: Vec<Instant> = self
                .grants
                .iter()
                .map(|(g, _, _)| *g + period)
                .chain(self.pause)
                .filter(|c| *c > now)
                .collect();
            candidates.push(now);
            candidates.sort();
            candidates
                .into_iter()
                .find(|c| self.allowed(limits, *c, tokens))
                .unwrap_or_else(|| panic!("model found no instant"))
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request {
            advance_ms: u64,
            estimate: u64,
            /// actual = reserved * actual_pct / 100
            actual_pct: u64,
            /// reconcile after this many further ops
            reconcile_after: usize,
            /// queue length for the projection check
            queued: usize,
        },
        SetLimits {
            rate_limit: u32,
            token_limit: Option<u64>,
        },
        Pause {
            for_ms: u64,
        },
        ClearPause,
        Prune {
            advance_ms: u64,
        },
    }

    fn op_strategy(max_actual_pct: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (0u64..40, 0u64..150, 0..=max_actual_pct, 0usize..6, 0usize..12).prop_map(
                |(advance_ms, estimate, actual_pct, reconcile_after, queued)| Op::Request {
                    advance_ms,
                    estimate,
                    actual_pct,
                    reconcile_after,
                    queued,
                }
            ),
            1 => (0u32..6, proptest::option::of(1u64..120))
                .prop_map(|(rate_limit, token_limit)| Op::SetLimits { rate_limit, token_limit }),
            1 => (0u64..80).prop_map(|for_ms| Op::Pause { for_ms }),
            1 => Just(Op::ClearPause),
            1 => (0u64..40).prop_map(|advance_ms| Op::Prune { advance_ms }),
        ]
    }

    fn limits_strategy() -> impl Strategy<Value = Limits> {
        (1u32..6, 1u64..50, proptest::option::of(1u64..120)).prop_map(
            |(rate_limit, period_ms, token_limit)| {
                Limits::new(rate_limit, ms(period_ms), token_limit)
            },
        )
    }

    /// Grants `tokens` at the first instant try_acquire accepts, starting at `now`.
    fn acquire_greedily(lim: &mut Limiter, mut now: Instant, tokens: u64) -> (Instant, GrantId) {
        for _ in 0..1000 {
            match lim.try_acquire(now, tokens) {
                Ok(id) => return (now, id),
                Err(at) => {
                    assert!(at > now, "Err({at:?}) not after now {now:?}");
                    now = at;
                }
            }
        }
        panic!("no grant after 1000 attempts");
    }

    /// Drives `ops` through a limiter and the model, checking properties (1), (3), (4) on the way
    /// and returning the grant log (instant, final tokens, limits at grant) for (1) and (2).
    fn drive(limits: Limits, ops: &[Op]) -> Vec<(Instant, u64, Limits)> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut lim = Limiter::new(limits);
        let mut model = Model::default();
        // (due op index, grant index, actual tokens)
        let mut pending: Vec<(usize, usize, u64)> = Vec::new();

        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Request {
                    advance_ms,
                    estimate,
                    actual_pct,
                    reconcile_after,
                    queued,
                } => {
                    now += ms(*advance_ms);
                    let estimate = *estimate;

                    // (4) projection == what greedy acquisition actually yields.
                    let predicted = lim.projected(now, *queued, estimate);
                    let mut copy = lim.clone();
                    let mut at = now;
                    for _ in 0..=*queued {
                        at = acquire_greedily(&mut copy, at, estimate).0;
                    }
                    assert_eq!(predicted, at, "projected(queued = {queued}) at step {step}");

                    // (3) earliest is exact (matches the naive model) and consistent with
                    // try_acquire; an Err(t) is granted at t.
                    let current = lim.limits();
                    let earliest = lim.earliest(now, estimate);
                    assert_eq!(
                        earliest,
                        model.earliest(current, now, estimate),
                        "earliest vs model at step {step}"
                    );
                    let id = match lim.try_acquire(now, estimate) {
                        Ok(id) => {
                            assert_eq!(earliest, now);
                            id
                        }
                        Err(at) => {
                            assert!(at > now);
                            assert_eq!(at, earliest);
                            now = at;
                            match lim.try_acquire(now, estimate) {
                                Ok(id) => id,
                                Err(again) => panic!("refused at promised {now:?}: {again:?}"),
                            }
                        }
                    };
                    assert!(model.allowed(current, now, estimate));
                    let reserved = current.token_limit.map_or(estimate, |l| estimate.min(l));
                    model.grants.push((now, reserved, current));
                    model.ids.push(id);
                    let actual = reserved * actual_pct / 100;
                    pending.push((step + reconcile_after, model.grants.len() - 1, actual));
                }
                Op::SetLimits {
                    rate_limit,
                    token_limit,
                } => {
                    // The period stays fixed: grants pruned under a shorter period are
                    // (documented to be) forgotten.
                    lim.set_limits(Limits::new(*rate_limit, limits.period, *token_limit));
                }
                Op::Pause { for_ms } => {
                    lim.pause_until(now + ms(*for_ms));
                    let until = now + ms(*for_ms);
                    model.pause = Some(model.pause.map_or(until, |p| p.max(until)));
                    assert_eq!(lim.paused_until(now), model.pause.filter(|p| *p > now));
                }
                Op::ClearPause => {
                    lim.clear_pause();
                    model.pause = None;
                }
                Op::Prune { advance_ms } => {
                    now += ms(*advance_ms);
                    lim.prune(now);
                }
            }
            // Reconcile whatever is due.
            let (due, later): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(due, _, _)| *due <= step);
            pending = later;
            for (_, index, actual) in due {
                lim.reconcile(model.ids[index], actual);
                model.grants[index].1 = actual;
            }
            let window = model
                .grants
                .iter()
                .filter(|(g, _, _)| *g <= now && *g + limits.period > now)
                .count();
            assert_eq!(lim.in_window(now), window);
        }
        model.grants
    }

    /// For each grant: the grants in the window ending at it (including itself).
    fn windows(grants: &[(Instant, u64, Limits)]) -> impl Iterator<Item = (Limits, usize, u64)> {
        grants.iter().enumerate().map(|(i, (at, _, limits))| {
            let in_window: Vec<u64> = grants[..=i]
                .iter()
                .filter(|(g, _, _)| *g + limits.period > *at)
                .map(|(_, tok, _)| *tok)
                .collect();
            (*limits, in_window.len(), in_window.iter().sum())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// (1) No sliding window of `period` ever holds more than rate_limit grants, even with
        /// overestimated/underestimated tokens, limit changes and pauses; and (3), (4) hold
        /// along the way (checked inside `drive`).
        #[test]
        fn prop_no_window_exceeds_the_rate_limit(
            limits in limits_strategy(),
            ops in vec(op_strategy(300), 1..80),
        ) {
            let grants = drive(limits, &ops);
            for (i, (at, _, _)) in grants.iter().enumerate().skip(1) {
                prop_assert!(*at >= grants[i - 1].0, "grants are made in time order");
            }
            for (limits, count, _) in windows(&grants) {
                prop_assert!(count <= limits.normalized().rate_limit as usize);
            }
        }

        /// (2) When no reconciliation raises usage (actual <= reserved), no window holds more
        /// than token_limit tokens.
        #[test]
        fn prop_no_window_exceeds_the_token_limit(
            limits in limits_strategy(),
            ops in vec(op_strategy(100), 1..80),
        ) {
            let grants = drive(limits, &ops);
            for (limits, count, tokens) in windows(&grants) {
                prop_assert!(count <= limits.normalized().rate_limit as usize);
                if let Some(limit) = limits.token_limit {
                    prop_assert!(tokens <= limit, "{tokens} tokens in a window, limit {limit}");
                }
            }
        }

        /// With fixed limits the sorted grant times satisfy g[i + L] - g[i] >= period.
        #[test]
        fn prop_grants_l_apart_are_a_full_period_apart(
            rate_limit in 1u32..5,
            period_ms in 1u64..30,
            steps in vec((0u64..20, 0usize..4), 1..60),
        ) {
            let period = ms(period_ms);
            let mut lim = limiter(rate_limit, period, None);
            let t0 = Instant::now();
            let mut now = t0;
            let mut grants = Vec::new();
            for (advance, burst) in steps {
                now += ms(advance);
                for _ in 0..burst {
                    let (at, _) = acquire_greedily(&mut lim, now, 0);
                    now = at;
                    grants.push(at);
                }
            }
            let l = rate_limit as usize;
            for i in l..grants.len() {
                prop_assert!(grants[i] - grants[i - l] >= period);
            }
        }

        /// (4) Projection for long queues (beyond two batches, where it is extrapolated) matches
        /// greedy acquisition.
        #[test]
        fn prop_projected_long_queues_match_greedy_acquisition(
            limits in limits_strategy(),
            history in vec((0u64..30, 0u64..150), 0..10),
            queued in 0usize..40,
            tokens_each in 0u64..150,
            pause_ms in proptest::option::of(0u64..100),
        ) {
            let t0 = Instant::now();
            let mut lim = Limiter::new(limits);
            let mut now = t0;
            for (advance, tokens) in history {
                now += ms(advance);
                now = acquire_greedily(&mut lim, now, tokens).0;
            }
            if let Some(p) = pause_ms {
                lim.pause_until(now + ms(p));
            }
            let predicted = lim.projected(now, queued, tokens_each);
            let mut at = now;
            for _ in 0..=queued {
                at = acquire_greedily(&mut lim, at, tokens_each).0;
            }
            prop_assert_eq!(predicted, at);
        }
    }

    #[test]
    fn restored_grants_count_against_the_window_until_they_age_out() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut l = Limiter::new(Limits::new(2, Duration::from_secs(1), None));
        l.restore(vec![
            t0 - Duration::from_millis(100),
            t0 - Duration::from_millis(600),
        ]);
        assert_eq!(l.in_window(t0), 2);
        assert_eq!(l.try_acquire(t0, 0), Err(t0 + Duration::from_millis(400)));
        assert!(l.try_acquire(t0 + Duration::from_millis(400), 0).is_ok());
    }

    #[test]
    fn a_request_sent_late_counts_from_when_it_was_sent() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let p = Duration::from_secs(1);
        let mut l = Limiter::new(Limits::new(2, p, None));
        let a = l.try_acquire(t0, 0).unwrap();
        let _b = l.try_acquire(t0 + Duration::from_millis(10), 0).unwrap();
        // `a` only left 50 ms after its grant: the window frees 1 s after that, not after t0.
        l.mark_sent(a, t0 + Duration::from_millis(50));
        assert_eq!(l.earliest(t0 + p, 0), t0 + Duration::from_millis(1010));
        assert!(l.try_acquire(t0 + Duration::from_millis(1010), 0).is_ok());
        assert_eq!(
            l.try_acquire(t0 + Duration::from_millis(1011), 0),
            Err(t0 + Duration::from_millis(1050))
        );
        // Reconcile still finds a grant that moved.
        l.reconcile(a, 7);
        assert_eq!(l.tokens_in_window(t0 + Duration::from_millis(1040)), 7);
    }
}
