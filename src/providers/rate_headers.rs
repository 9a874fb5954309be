//! The providers' rate-limit headers: how long a key must wait before its next request.
//!
//! - `Retry-After` (delta-seconds or an HTTP date) and Azure's `retry-after-ms`: on a 429, the
//!   provider's own word on when to come back.
//! - OpenAI (and many compatible servers): `x-ratelimit-remaining-requests` /
//!   `x-ratelimit-reset-requests` (and `-tokens`), the reset as a Go-style duration (`1s`,
//!   `6m0s`, `20ms`, `1h2m3.5s`).
//! - Anthropic: `anthropic-ratelimit-requests-remaining` / `anthropic-ratelimit-requests-reset`
//!   (and `-tokens`, `-input-tokens`, `-output-tokens`), the reset as an RFC 3339 timestamp.
//!
//! On a 429 without `Retry-After` the reset of the exhausted limit is the cool-down; on a
//! success whose remaining count is 0 the key pauses until the reset, so the next request does
//! not earn a 429 at all.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// The longest pause any header may impose (a day), so a bogus value cannot park a key forever.
const MAX_PAUSE: Duration = Duration::from_secs(86_400);

/// How a reset header is written.
#[derive(Clone, Copy)]
enum ResetFormat {
    /// A Go-style duration from now (`6m0s`), OpenAI's.
    Duration,
    /// An RFC 3339 instant (`2025-01-01T00:00:05Z`), Anthropic's.
    Timestamp,
}

/// One limit a provider reports: its remaining-count header and its reset header.
struct LimitHeaders {
    remaining: &'static str,
    reset: &'static str,
    format: ResetFormat,
}

const LIMITS: &[LimitHeaders] = &[
    LimitHeaders {
        remaining: "x-ratelimit-remaining-requests",
        reset: "x-ratelimit-reset-requests",
        format: ResetFormat::Duration,
    },
    LimitHeaders {
        remaining: "x-ratelimit-remaining-tokens",
        reset: "x-ratelimit-reset-tokens",
        format: ResetFormat::Duration,
    },
    LimitHeaders {
        remaining: "anthropic-ratelimit-requests-remaining",
        reset: "anthropic-ratelimit-requests-reset",
        format: ResetFormat::Timestamp,
    },
    LimitHeaders {
        remaining: "anthropic-ratelimit-tokens-remaining",
        reset: "anthropic-ratelimit-tokens-reset",
        format: ResetFormat::Timestamp,
    },
    LimitHeaders {
        remaining: "anthropic-ratelimit-input-tokens-remaining",
        reset: "anthropic-ratelimit-input-tokens-reset",
        format: ResetFormat::Timestamp,
    },
    LimitHeaders {
        remaining: "anthropic-ratelimit-output-tokens-remaining",
        reset: "anthropic-ratelimit-output-tokens-reset",
        format: ResetFormat::Timestamp,
    },
];

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Parses a `Retry-After` header: delta-seconds (possibly fractional) or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_PAUSE.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_PAUSE),
    )
}

/// Parses a Go-style duration as OpenAI writes its reset headers: a sequence of decimal numbers
/// each with a unit (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), e.g. `1s`, `6m0s`, `20ms`,
/// `1h2m3.5s`. A bare number is taken as seconds.
pub fn parse_reset_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_PAUSE.as_secs_f64())));
    }
    let mut total = 0.0_f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    total
        .is_finite()
        .then(|| Duration::from_secs_f64(total.min(MAX_PAUSE.as_secs_f64())))
}

/// Parses an RFC 3339 reset instant (Anthropic's) into the time left from `now` (zero when past).
pub fn parse_reset_timestamp(value: &str, now: SystemTime) -> Option<Duration> {
    let at: SystemTime = chrono::DateTime::parse_from_rfc3339(value.trim())
        .ok()?
        .with_timezone(&chrono::Utc)
        .into();
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_PAUSE),
    )
}

/// The provider's explicit "come back after": `retry-after-ms` (Azure) or `Retry-After`.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let ms = header(headers, "retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64((ms / 1000.0).min(MAX_PAUSE.as_secs_f64())));
    ms.or_else(|| {
        header(headers, reqwest::header::RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(v, now))
    })
}

/// How long until every exhausted limit the headers report has reset (the longest of them), or
/// `None` when no limit is exhausted, no reset is given, or it is already over.
///
/// A limit is exhausted when its remaining count is 0; on a 429 (`rejected`) a limit whose
/// remaining count is not reported but whose reset is counts as exhausted too.
pub(crate) fn exhausted_for(
    headers: &HeaderMap,
    now: SystemTime,
    rejected: bool,
) -> Option<Duration> {
    LIMITS
        .iter()
        .filter(|l| match header(headers, l.remaining) {
            Some(v) => v.parse::<f64>().is_ok_and(|n| n <= 0.0),
            None => rejected,
        })
        .filter_map(|l| {
            let v = header(headers, l.reset)?;
            match l.format {
                ResetFormat::Duration => parse_reset_duration(v),
                ResetFormat::Timestamp => parse_reset_timestamp(v, now),
            }
        })
        .max()
        .filter(|d| !d.is_zero())
}

/// The cool-down after a 429: `Retry-After` when given, else the reset of the exhausted limit.
pub(crate) fn cooldown_after_429(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry_after(headers, now).or_else(|| exhausted_for(headers, now, true))
}

/// The pause after a success: until the reset when the provider says nothing is left.
pub(crate) fn pause_after_success(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    exhausted_for(headers, now, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = at(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1e9", now), Some(MAX_PAUSE));
    }

    #[test]
    fn go_durations_as_openai_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_reset_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_reset_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_reset_duration("20ms"), Some(ms(20)));
        assert_eq!(parse_reset_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_reset_duration("0.25s"), Some(ms(250)));
        assert_eq!(parse_reset_duration("17.28s"), Some(ms(17_280)));
        assert_eq!(parse_reset_duration("1m30.5s"), Some(ms(90_500)));
        assert_eq!(
            parse_reset_duration("500us"),
            Some(Duration::from_micros(500))
        );
        assert_eq!(parse_reset_duration("3"), Some(ms(3000)), "bare seconds");
        assert_eq!(parse_reset_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_reset_duration("48h"), Some(MAX_PAUSE), "capped");
        for bad in ["", "s", "1x", "1s2", "-1s", "1..2s", "soon"] {
            assert_eq!(parse_reset_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_timestamps_as_anthropic_writes_them() {
        let now = at(1_735_689_600); // 2025-01-01T00:00:00Z
        assert_eq!(
            parse_reset_timestamp("2025-01-01T00:00:05Z", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_reset_timestamp("2025-01-01T01:00:01.5+01:00", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_reset_timestamp("2024-12-31T23:59:00Z", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_reset_timestamp("tomorrow", now), None);
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let now = at(0);
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(9)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_429_without_retry_after_cools_down_until_the_exhausted_limit_resets() {
        let now = at(1_735_689_600);
        let openai = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-remaining-tokens", "9000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            cooldown_after_429(&openai, now),
            Some(Duration::from_millis(1500)),
            "the token limit is not exhausted: its reset does not count"
        );
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:03Z"),
        ]);
        assert_eq!(
            cooldown_after_429(&anthropic, now),
            Some(Duration::from_secs(3))
        );
        let mut both = anthropic.clone();
        both.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            cooldown_after_429(&both, now),
            Some(Duration::from_secs(7)),
            "Retry-After wins"
        );
        let reset_only = headers(&[("x-ratelimit-reset-requests", "2s")]);
        assert_eq!(
            cooldown_after_429(&reset_only, now),
            Some(Duration::from_secs(2)),
            "on a 429 a reset without a remaining count is taken"
        );
        let nothing_exhausted = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "2s"),
        ]);
        assert_eq!(cooldown_after_429(&nothing_exhausted, now), None);
    }

    #[test]
    fn a_success_pauses_only_when_a_limit_is_exhausted() {
        let now = at(1_735_689_600);
        let last = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
        ]);
        assert_eq!(
            pause_after_success(&last, now),
            Some(Duration::from_millis(20))
        );
        let some_left = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "20ms"),
        ]);
        assert_eq!(pause_after_success(&some_left, now), None);
        let reset_only = headers(&[("x-ratelimit-reset-requests", "2s")]);
        assert_eq!(pause_after_success(&reset_only, now), None);
        let both = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:01Z"),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-01-01T00:00:04Z",
            ),
        ]);
        assert_eq!(
            pause_after_success(&both, now),
            Some(Duration::from_secs(4)),
            "the longest exhausted limit"
        );
        let past = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2024-12-31T23:59:59Z"),
        ]);
        assert_eq!(pause_after_success(&past, now), None, "already reset");
        let garbage = headers(&[
            ("x-ratelimit-remaining-requests", "zero"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(pause_after_success(&garbage, now), None);
    }
}
