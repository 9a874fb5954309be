//! The storage test bodies, written once against the traits of `ai_rate_limiter::store` and run
//! on every backend by `storage_tests!`. Each body gets a fresh, empty, migrated store.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use ai_rate_limiter::Error;
use ai_rate_limiter::domain::{
    ApiKey, KeyConfig, MessageResult, MessageStatus, ProviderKind, RateLimit, RatePeriod, Usage,
};
use ai_rate_limiter::store::{Completion, Inserted, Store};

use super::fixtures::*;

type S = Arc<dyn Store>;

fn success(at_secs: i64, key_id: Option<Uuid>) -> Completion {
    Completion {
        status: MessageStatus::Success,
        result: Some(MessageResult {
            text: "Hello, how are you?".into(),
            json: None,
            model: "gpt-4o-mini-2024-07-18".into(),
            usage: Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                total_tokens: 19,
            }),
        }),
        error: None,
        attempts: 2,
        key_id,
        completed_at: at(at_secs, 999_999_999),
    }
}

pub async fn answers_ping(store: S) {
    store.ping().await.unwrap();
}

pub async fn creates_and_lists_workspaces(store: S) {
    assert!(store.list_workspaces(None).await.unwrap().is_empty());
    // Inserted out of order; listed by creation time, then id.
    let b = workspace("b", at(2, 0));
    let c = workspace("c", at(1, 0));
    let a = workspace("a", at(1, 0));
    // Mixed sub-second precision must still order by time (not by text).
    let d = workspace("d", at(1, 500_000_000));
    let e = workspace("e", at(1, 123_456_000));
    for w in [&b, &c, &a, &d, &e] {
        store.create_workspace(w, &[]).await.unwrap();
    }
    let all = store.list_workspaces(None).await.unwrap();
    let expected: Vec<_> = [&a, &c, &e, &d, &b]
        .into_iter()
        .map(|w| ws_us(w.clone()))
        .collect();
    assert_eq!(all, expected);

    let only_c = store.list_workspaces(Some(&wid("c"))).await.unwrap();
    assert_eq!(only_c, vec![ws_us(c.clone())]);
    assert!(
        store
            .list_workspaces(Some(&wid("zzz")))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.get_workspace(&wid("b")).await.unwrap(),
        Some(ws_us(b))
    );
    assert_eq!(store.get_workspace(&wid("nope")).await.unwrap(), None);
}

pub async fn creates_a_workspace_with_its_keys(store: S) {
    let w = workspace("ws-1", at(0, 0));
    let k1 = key("ws-1", at(0, 0));
    let mut k2 = key("ws-1", at(0, 0));
    k2.provider = ProviderKind::Mock;
    store
        .create_workspace(&w, &[k1.clone(), k2.clone()])
        .await
        .unwrap();
    let mut expected = vec![key_us(k1), key_us(k2)];
    // Same creation time: ordered by key id.
    expected.sort_by_key(|k| k.id);
    assert_eq!(store.list_keys(Some(&wid("ws-1"))).await.unwrap(), expected);
}

pub async fn duplicate_workspace_is_a_conflict(store: S) {
    let w = workspace("dup", at(0, 0));
    let k = key("dup", at(0, 0));
    store
        .create_workspace(&w, std::slice::from_ref(&k))
        .await
        .unwrap();

    let again = workspace("dup", at(5, 0));
    let other_key = key("dup", at(5, 0));
    let err = store
        .create_workspace(&again, &[other_key])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "got {err:?}");
    assert!(err.to_string().contains("dup"), "{err}");

    // Nothing of the failed registration was written.
    assert_eq!(
        store.get_workspace(&wid("dup")).await.unwrap(),
        Some(ws_us(w))
    );
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k)]);
}

pub async fn failed_workspace_creation_writes_nothing(store: S) {
    // Two keys with the same id: the second insert fails, the transaction rolls back.
    let w = workspace("atomic", at(0, 0));
    let k = key("atomic", at(0, 0));
    assert!(store.create_workspace(&w, &[k.clone(), k]).await.is_err());
    assert_eq!(store.get_workspace(&wid("atomic")).await.unwrap(), None);
    assert!(store.list_keys(None).await.unwrap().is_empty());
    // The id is free again.
    store.create_workspace(&w, &[]).await.unwrap();
}

pub async fn sets_worker_count(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    assert!(store.set_worker_count(&wid("w"), 7).await.unwrap());
    assert_eq!(
        store
            .get_workspace(&wid("w"))
            .await
            .unwrap()
            .unwrap()
            .worker_count,
        7
    );
    assert!(store.set_worker_count(&wid("w"), 0).await.unwrap());
    assert_eq!(
        store
            .get_workspace(&wid("w"))
            .await
            .unwrap()
            .unwrap()
            .worker_count,
        0
    );
    assert!(!store.set_worker_count(&wid("missing"), 3).await.unwrap());
}

pub async fn deleting_a_workspace_cascades_to_keys_and_messages(store: S) {
    let k_gone = key("gone", at(0, 0));
    let k_kept = key("kept", at(0, 0));
    store
        .create_workspace(&workspace("gone", at(0, 0)), std::slice::from_ref(&k_gone))
        .await
        .unwrap();
    store
        .create_workspace(&workspace("kept", at(0, 0)), std::slice::from_ref(&k_kept))
        .await
        .unwrap();
    let m_gone = message("gone", at(1, 0));
    let m_kept = message("kept", at(1, 0));
    store.insert_message(&m_gone).await.unwrap();
    store.insert_message(&m_kept).await.unwrap();

    assert!(store.delete_workspace(&wid("gone")).await.unwrap());
    assert!(!store.delete_workspace(&wid("gone")).await.unwrap());

    assert_eq!(store.get_workspace(&wid("gone")).await.unwrap(), None);
    assert_eq!(store.get_key(k_gone.id).await.unwrap(), None);
    assert_eq!(store.get_message(m_gone.id).await.unwrap(), None);
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![(wid("kept"), m_kept.id)]
    );
    // The other workspace is untouched.
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k_kept)]);
    assert_eq!(
        store.get_message(m_kept.id).await.unwrap().map(msg_us),
        Some(msg_us(m_kept))
    );
}

pub async fn inserts_lists_and_gets_keys(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let a2 = key("a", at(2, 0));
    let b1 = key("b", at(1, 0));
    let a1 = key("a", at(1, 500_000));
    for k in [&a2, &b1, &a1] {
        store.insert_key(k).await.unwrap();
    }
    assert_eq!(
        store.list_keys(None).await.unwrap(),
        vec![key_us(b1.clone()), key_us(a1.clone()), key_us(a2.clone())]
    );
    assert_eq!(
        store.list_keys(Some(&wid("a"))).await.unwrap(),
        vec![key_us(a1.clone()), key_us(a2)]
    );
    assert!(
        store
            .list_keys(Some(&wid("none")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_key(a1.id).await.unwrap(), Some(key_us(a1)));
    assert_eq!(store.get_key(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn key_of_a_missing_workspace_is_refused(store: S) {
    let k = key("missing", at(0, 0));
    assert!(store.insert_key(&k).await.is_err());
    assert_eq!(store.get_key(k.id).await.unwrap(), None);
}

pub async fn updates_keys(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    let mut updated = k.clone();
    updated.provider = ProviderKind::Mock;
    updated.api_key = ApiKey::parse("sk-rotated-000000000000").unwrap();
    updated.rate_limit = RateLimit::new(3, RatePeriod::from_seconds(86_400).unwrap()).unwrap();
    updated.config = KeyConfig {
        model: "gpt-4.1".into(),
        ..Default::default()
    };
    updated.healthy = false;
    updated.updated_at = at(9, 1_234);
    assert!(store.update_key(&updated).await.unwrap());
    let got = key_us(store.get_key(k.id).await.unwrap().unwrap());
    assert_eq!(got, key_us(updated.clone()));
    // Creation time and owner are not changed by an update.
    assert_eq!(got.created_at, key_us(k.clone()).created_at);

    let mut ghost = updated;
    ghost.id = Uuid::new_v4();
    assert!(!store.update_key(&ghost).await.unwrap());
    assert_eq!(store.get_key(ghost.id).await.unwrap(), None);
}

pub async fn sets_key_health(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    store.set_key_healthy(k.id, false).await.unwrap();
    let got = store.get_key(k.id).await.unwrap().unwrap();
    assert!(!got.healthy);
    // Only the flag changed.
    assert_eq!(
        got,
        key_us(ai_rate_limiter::domain::ProviderKey {
            healthy: false,
            ..k.clone()
        })
    );
    store.set_key_healthy(k.id, true).await.unwrap();
    assert!(store.get_key(k.id).await.unwrap().unwrap().healthy);
    // A missing key is not an error.
    store.set_key_healthy(Uuid::new_v4(), false).await.unwrap();
}

pub async fn deletes_keys(store: S) {
    let k1 = key("w", at(0, 0));
    let k2 = key("w", at(1, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), &[k1.clone(), k2.clone()])
        .await
        .unwrap();
    assert!(store.delete_key(k1.id).await.unwrap());
    assert!(!store.delete_key(k1.id).await.unwrap());
    assert_eq!(store.get_key(k1.id).await.unwrap(), None);
    assert_eq!(store.list_keys(None).await.unwrap(), vec![key_us(k2)]);
    // The workspace stays.
    assert!(store.get_workspace(&wid("w")).await.unwrap().is_some());
}

pub async fn secrets_round_trip_exactly(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let secrets = [
        "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_owned(),
        "short".to_owned(),
        r#"k3y with spaces, 'quotes' "double" \back\slash; DROP TABLE x;--"#.to_owned(),
        "ключ-🔑-密钥".to_owned(),
        "x".repeat(4096),
    ];
    for (i, secret) in secrets.iter().enumerate() {
        let mut k = key("w", at(i as i64, 0));
        k.api_key = ApiKey::parse(secret).unwrap();
        store.insert_key(&k).await.unwrap();
        let got = store.get_key(k.id).await.unwrap().unwrap();
        // The store keeps the whole secret; masking is the API's job.
        assert_eq!(got.api_key.expose(), secret.as_str());
        assert_eq!(got.api_key, k.api_key);
    }
}

pub async fn key_config_round_trips(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let full = key("w", at(0, 0));
    let mut minimal = key("w", at(1, 0));
    minimal.config = KeyConfig {
        model: "m".into(),
        ..Default::default()
    };
    let mut odd = key("w", at(2, 0));
    odd.config = KeyConfig {
        model: "modèle \"ü\" 🚀".into(),
        endpoint: Some("https://example.org/openai/deployments/x?api-version=1&y=2".into()),
        api_version: None,
        temperature: Some(0.1),
        max_tokens: Some(u32::MAX),
        timeout_s: Some(3600.0),
        ..Default::default()
    };
    for k in [&full, &minimal, &odd] {
        store.insert_key(k).await.unwrap();
        let got = store.get_key(k.id).await.unwrap().unwrap();
        assert_eq!(got.config, k.config);
    }
}

pub async fn inserts_and_gets_messages(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let full = message("w", at(1, 0));
    let bare = bare_message("w", at(2, 0));
    for m in [&full, &bare] {
        assert!(matches!(
            store.insert_message(m).await.unwrap(),
            Inserted::New
        ));
        let got = store.get_message(m.id).await.unwrap().unwrap();
        assert_eq!(msg_us(got), msg_us(m.clone()));
    }
    assert_eq!(store.get_message(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn message_of_a_missing_workspace_is_refused(store: S) {
    let m = message("missing", at(0, 0));
    assert!(store.insert_message(&m).await.is_err());
    assert_eq!(store.get_message(m.id).await.unwrap(), None);
}

pub async fn insert_message_is_idempotent(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = message("w", at(1, 0));
    assert!(matches!(
        store.insert_message(&m).await.unwrap(),
        Inserted::New
    ));

    // Same id, different content: the first one wins and is returned.
    let mut again = bare_message("w", at(5, 0));
    again.id = m.id;
    match store.insert_message(&again).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(msg_us(*existing), msg_us(m.clone())),
        Inserted::New => panic!("a second insert with the same id must not be New"),
    }
    assert_eq!(
        store.get_message(m.id).await.unwrap().map(msg_us),
        Some(msg_us(m.clone()))
    );

    // The existing message is returned in its current state.
    store.mark_processing(m.id, at(2, 0)).await.unwrap();
    match store.insert_message(&again).await.unwrap() {
        Inserted::Existing(existing) => {
            assert_eq!(existing.status, MessageStatus::Processing);
            assert_eq!(existing.started_at, Some(at(2, 0)));
        }
        Inserted::New => panic!("expected Existing"),
    }
    assert_eq!(store.unfinished_messages().await.unwrap().len(), 1);
}

pub async fn message_id_of_another_workspace_returns_the_original(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    let m = message("a", at(1, 0));
    store.insert_message(&m).await.unwrap();
    let mut stolen = message("b", at(2, 0));
    stolen.id = m.id;
    // The store reports the existing message; the engine turns the mismatch into a conflict.
    match store.insert_message(&stolen).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(existing.workspace_id, wid("a")),
        Inserted::New => panic!("expected Existing"),
    }
    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![(wid("a"), m.id)]
    );
    // Deleting the other workspace leaves it alone.
    assert!(store.delete_workspace(&wid("b")).await.unwrap());
    assert!(store.get_message(m.id).await.unwrap().is_some());
}

pub async fn mark_processing_keeps_the_first_start(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();

    assert!(
        store
            .mark_processing(m.id, at(10, 111_111_000))
            .await
            .unwrap()
    );
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Processing);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));

    // Taken again (e.g. after a restart): still processing, first start kept.
    assert!(store.mark_processing(m.id, at(20, 0)).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Processing);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));

    // Final messages and missing ones are not touched.
    assert!(
        store
            .complete_message(m.id, &success(30, None))
            .await
            .unwrap()
    );
    assert!(!store.mark_processing(m.id, at(40, 0)).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Success);
    assert_eq!(got.started_at, Some(at(10, 111_111_000)));
    assert!(
        !store
            .mark_processing(Uuid::new_v4(), at(40, 0))
            .await
            .unwrap()
    );
}

pub async fn completes_a_message_once(store: S) {
    let k = key("w", at(0, 0));
    store
        .create_workspace(&workspace("w", at(0, 0)), std::slice::from_ref(&k))
        .await
        .unwrap();
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    store.mark_processing(m.id, at(1, 0)).await.unwrap();

    let done = success(5, Some(k.id));
    assert!(store.complete_message(m.id, &done).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    let expected = ai_rate_limiter::domain::Message {
        status: MessageStatus::Success,
        result: done.result.clone(),
        error: None,
        attempts: 2,
        key_id: Some(k.id),
        started_at: Some(at(1, 0)),
        completed_at: Some(done.completed_at),
        ..m.clone()
    };
    assert_eq!(msg_us(got.clone()), msg_us(expected));

    // A second completion (a duplicate delivery) does not overwrite the first.
    let late = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("too late".into()),
        attempts: 9,
        key_id: None,
        completed_at: at(50, 0),
    };
    assert!(!store.complete_message(m.id, &late).await.unwrap());
    assert_eq!(store.get_message(m.id).await.unwrap().unwrap(), got);

    assert!(!store.complete_message(Uuid::new_v4(), &late).await.unwrap());
}

pub async fn completes_a_pending_message_as_failed(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let m = bare_message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    // Straight from pending (e.g. it could not be queued).
    let failed = Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some("provider said: 400 Bad Request — \"model\" not found".into()),
        attempts: 0,
        key_id: None,
        completed_at: at(3, 0),
    };
    assert!(store.complete_message(m.id, &failed).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Failed);
    assert_eq!(got.error, failed.error);
    assert_eq!(got.result, None);
    assert_eq!(got.attempts, 0);
    assert_eq!(got.key_id, None);
    assert_eq!(got.started_at, None);
    assert_eq!(got.completed_at, Some(at(3, 0)));
    assert!(store.unfinished_messages().await.unwrap().is_empty());
}

pub async fn json_results_round_trip(store: S) {
    store
        .create_workspace(&workspace("w", at(0, 0)), &[])
        .await
        .unwrap();
    let parsed = json!({
        "title": "Grüße 👋",
        "items": [1, -42, 0.1, 1.5e300, 18446744073709551615u64, true, null, "", {"nested": []}],
        "escapes": "\"quoted\"\n\t\\ </p>",
        "": {"empty key": {}},
        "zeta": 1, "alpha": 2
    });
    let result = MessageResult {
        text: parsed.to_string(),
        json: Some(parsed.clone()),
        model: "gpt-4o".into(),
        usage: Some(Usage {
            prompt_tokens: u64::from(u32::MAX) + 1,
            completion_tokens: 0,
            total_tokens: u64::from(u32::MAX) + 1,
        }),
    };
    let m = message("w", at(0, 0));
    store.insert_message(&m).await.unwrap();
    let done = Completion {
        status: MessageStatus::Success,
        result: Some(result.clone()),
        error: None,
        attempts: 1,
        key_id: Some(Uuid::new_v4()),
        completed_at: at(1, 0),
    };
    assert!(store.complete_message(m.id, &done).await.unwrap());
    let got = store.get_message(m.id).await.unwrap().unwrap();
    assert_eq!(got.result, Some(result.clone()));
    assert_eq!(got.result.unwrap().json, Some(parsed));

    // A text answer without usage, and a failed one that kept the raw text.
    let m2 = bare_message("w", at(2, 0));
    store.insert_message(&m2).await.unwrap();
    let text_only = MessageResult {
        text: "not { json".into(),
        json: None,
        model: "m".into(),
        usage: None,
    };
    let failed = Completion {
        status: MessageStatus::Failed,
        result: Some(text_only.clone()),
        error: Some("the answer is not valid JSON".into()),
        attempts: 1,
        key_id: None,
        completed_at: at(3, 0),
    };
    assert!(store.complete_message(m2.id, &failed).await.unwrap());
    let got = store.get_message(m2.id).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Failed);
    assert_eq!(got.result, Some(text_only));
    assert_eq!(got.error, failed.error);
}

pub async fn timestamps_round_trip(store: S) {
    // Sub-microsecond digits are dropped by some backends: compare at microsecond precision.
    let created = at(0, 123_456_789);
    let w = workspace("w", created);
    let k = key("w", at(1, 1));
    store
        .create_workspace(&w, std::slice::from_ref(&k))
        .await
        .unwrap();
    let got_ws = store.get_workspace(&wid("w")).await.unwrap().unwrap();
    assert_eq!(ws_us(got_ws), ws_us(w));
    let got_key = key_us(store.get_key(k.id).await.unwrap().unwrap());
    assert_eq!(got_key.created_at, key_us(k.clone()).created_at);
    assert_eq!(got_key.updated_at, key_us(k).updated_at);

    let times = [
        at(0, 0),
        at(0, 1_000),
        at(-86_400 * 365 * 60, 999_999_000), // before 1970
        at(86_400 * 365 * 70, 500_000_000),  // 2094
    ];
    for (i, t) in times.into_iter().enumerate() {
        let m = bare_message("w", t);
        store.insert_message(&m).await.unwrap();
        let started = t + chrono::Duration::microseconds(i as i64 + 1);
        store.mark_processing(m.id, started).await.unwrap();
        let mut done = success(0, None);
        done.completed_at = started + chrono::Duration::milliseconds(1500);
        store.complete_message(m.id, &done).await.unwrap();
        let got = store.get_message(m.id).await.unwrap().unwrap();
        assert_eq!(got.created_at, t);
        assert_eq!(got.started_at, Some(started));
        assert_eq!(got.completed_at, Some(done.completed_at));
    }
}

pub async fn unfinished_messages_are_oldest_first_and_not_final(store: S) {
    for w in ["a", "b"] {
        store
            .create_workspace(&workspace(w, at(0, 0)), &[])
            .await
            .unwrap();
    }
    assert!(store.unfinished_messages().await.unwrap().is_empty());
    let pending_late = message("a", at(3, 0));
    let processing = message("a", at(1, 0));
    let done = message("a", at(0, 0));
    let failed = message("b", at(0, 500));
    let other_ws = message("b", at(0, 500_000_000));
    let earliest = bare_message("b", at(0, 1_000));
    for m in [
        &pending_late,
        &processing,
        &done,
        &failed,
        &other_ws,
        &earliest,
    ] {
        store.insert_message(m).await.unwrap();
    }
    store
        .mark_processing(processing.id, at(4, 0))
        .await
        .unwrap();
    store
        .complete_message(done.id, &success(5, None))
        .await
        .unwrap();
    let mut fail = success(5, None);
    fail.status = MessageStatus::Failed;
    fail.result = None;
    fail.error = Some("no".into());
    store.complete_message(failed.id, &fail).await.unwrap();

    assert_eq!(
        store.unfinished_messages().await.unwrap(),
        vec![
            (wid("b"), earliest.id),
            (wid("b"), other_ws.id),
            (wid("a"), processing.id),
            (wid("a"), pending_late.id),
        ]
    );
}
