//! Builders of domain values for the storage suite, and helpers to compare them across backends.

use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use uuid::Uuid;

use ai_rate_limiter::domain::{
    ApiKey, KeyConfig, Message, MessageRequest, MessageStatus, ProviderKey, ProviderKind,
    RateLimit, RatePeriod, ResponseFormat, Workspace, WorkspaceId,
};

/// A fixed instant plus `secs` seconds and `nanos` nanoseconds (nanoseconds on purpose: backends
/// keep at least microseconds, and the suite compares at that precision).
pub fn at(secs: i64, nanos: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
        + Duration::seconds(secs)
        + Duration::nanoseconds(nanos)
}

/// A workspace id.
pub fn wid(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}

/// A workspace created at `created_at`.
pub fn workspace(id: &str, created_at: DateTime<Utc>) -> Workspace {
    Workspace {
        id: wid(id),
        worker_count: 2,
        created_at,
    }
}

/// An OpenAI key of workspace `ws` with every config field set and a token limit.
pub fn key(ws: &str, created_at: DateTime<Utc>) -> ProviderKey {
    ProviderKey {
        id: Uuid::new_v4(),
        workspace_id: wid(ws),
        provider: ProviderKind::OpenAi,
        api_key: ApiKey::parse("sk-proj-AbCdEf0123456789_xyz-XYZ").unwrap(),
        rate_limit: RateLimit::new(10, RatePeriod::from_seconds(60).unwrap()).unwrap(),
        token_limit: Some(90_000),
        config: KeyConfig {
            model: "gpt-4o-mini".into(),
            endpoint: Some("http://127.0.0.1:9/v1".into()),
            api_version: Some("2024-02-01".into()),
            temperature: Some(0.2),
            max_tokens: Some(256),
            timeout_s: Some(30.5),
            ..Default::default()
        },
        healthy: true,
        created_at,
        updated_at: created_at,
    }
}

/// A key of workspace `ws` allowing 10 requests per `period_secs` seconds.
pub fn key_per(ws: &str, period_secs: i64, created_at: DateTime<Utc>) -> ProviderKey {
    ProviderKey {
        rate_limit: RateLimit::new(10, RatePeriod::from_seconds(period_secs).unwrap()).unwrap(),
        ..key(ws, created_at)
    }
}

/// A pending message of workspace `ws` with every request field set.
pub fn message(ws: &str, created_at: DateTime<Utc>) -> Message {
    Message {
        id: Uuid::new_v4(),
        workspace_id: wid(ws),
        request: MessageRequest {
            prompt: "Translate to English".into(),
            content: Some("Bonjour, ça va ? 👋\n\tligne 2".into()),
            system_prompt: Some("You are a translator.".into()),
            model: Some("gpt-4o-mini".into()),
            sequence_index: Some(-7),
            html_tag: Some("<p>".into()),
            response_format: ResponseFormat::Json,
        },
        status: MessageStatus::Pending,
        result: None,
        error: None,
        attempts: 0,
        key_id: None,
        created_at,
        started_at: None,
        completed_at: None,
    }
}

/// A pending message with only the required request fields.
pub fn bare_message(ws: &str, created_at: DateTime<Utc>) -> Message {
    Message {
        request: MessageRequest {
            prompt: "Hi".into(),
            ..Default::default()
        },
        ..message(ws, created_at)
    }
}

/// A pending message of workspace `ws` at position `sequence_index` of its document.
pub fn message_at_index(
    ws: &str,
    created_at: DateTime<Utc>,
    sequence_index: Option<i64>,
) -> Message {
    let mut m = bare_message(ws, created_at);
    m.request.sequence_index = sequence_index;
    m
}

/// The instant truncated to microseconds (the precision every backend keeps).
pub fn us(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The workspace with its timestamp truncated to microseconds.
pub fn ws_us(mut w: Workspace) -> Workspace {
    w.created_at = us(w.created_at);
    w
}

/// The key with its timestamps truncated to microseconds.
pub fn key_us(mut k: ProviderKey) -> ProviderKey {
    k.created_at = us(k.created_at);
    k.updated_at = us(k.updated_at);
    k
}

/// The message with its timestamps truncated to microseconds.
pub fn msg_us(mut m: Message) -> Message {
    m.created_at = us(m.created_at);
    m.started_at = m.started_at.map(us);
    m.completed_at = m.completed_at.map(us);
    m
}
